import * as fs from 'node:fs';
import * as path from 'node:path';
import { ModelSpec } from '../config/options';
import { TorchError } from '../util/errors';
import { sha256, sha256File } from '../util/hash';
import { ModelFormat, sniffFormat } from './format';

/** How the shim loads a model (manifest.json models.<id>.loader). */
export type PackagedLoader = 'torchscript' | 'weights' | 'state_dict' | 'pickle' | 'safetensors' | 'export' | 'transformers' | 'custom';

/** What the shim needs to load one model (serverless_torch/manifest.json "models.<id>"). */
export interface ModelManifest {
  /** Key in manifest.json "models", and the SERVERLESS_TORCH_MODEL of the functions that use it. */
  id: string;
  /** Posix path in the function package of the file or directory. */
  path: string;
  kind: 'file' | 'directory';
  loader: PackagedLoader;
  factory: string | null;
  /** transformers: the Auto classes of the model, and of an optional tokenizer or processor. */
  className?: string;
  tokenizer?: string | null;
  processor?: string | null;
  /** custom: the user's "module:function". */
  load?: string | null;
  /** sha256 of the file; of a directory, the sha256 of its sorted "path sha256" lines. */
  sha256: string;
  /** A directory's files (relative posix paths) and their sha256, checked one by one at cold start. */
  files?: Record<string, string>;
  bytes: number;
  /** Set when the packaged file is a dynamically quantized model (lib/model/quantize.ts). */
  quantized?: QuantizedManifest;
  /** Set when the model travels in the deployment bucket instead of the function zip. */
  s3?: S3Object;
}

/** A model in the deployment bucket (manifest.json "models.<id>.s3"); the bucket is the function's SERVERLESS_TORCH_MODEL_BUCKET. */
export interface S3Object {
  /** serverless-torch/models/<sha256>/<file>: content-addressed, so an unchanged model is never uploaded again. */
  key: string;
  size: number;
  sha256: string;
  /** The object's file name in /tmp. */
  file: string;
  /** True for a directory, stored as one zip of its files (stored, not compressed) and unpacked beside it. */
  archive: boolean;
}

/** A model as it ships: what the manifest says, and where its bytes come from on this machine. */
export interface PackagedModel {
  manifest: ModelManifest;
  /** The file shipped at manifest.path (the user's, or a quantized copy), or the directory whose files ship under it. */
  source: string;
  /** True when it travels in S3: the zips carry its manifest entry but not its bytes. */
  inS3?: boolean;
}

/** How the shim treats a quantized model (manifest.json "models.<id>.quantized"). */
export interface QuantizedManifest {
  /** torch dtype of the weights: "qint8". */
  dtype: string;
  /** torch.nn layer types quantized; the shim quantizes the factory's module alike before a state dict is loaded. */
  modules: string[];
  /** Quantized engine by platform.machine() of the sandbox; machines not listed keep torch's default. */
  engines: Record<string, string>;
}

function refuse(code: string, message: string): never {
  throw new TorchError(code, message);
}

/** The loader for a directory: only the ones that read directories. */
function directoryLoader(format: Extract<ModelFormat, { kind: 'directory' }>, spec: ModelSpec): PackagedLoader {
  const where = `${spec.option} ${spec.packagePath}/`;
  if (spec.loader === 'custom') return 'custom';
  if (spec.loader === 'transformers' || (spec.loader === 'auto' && format.huggingFace)) {
    if (!format.huggingFace) refuse('TORCH_MODEL_NOT_HUGGING_FACE', `${where} has no config.json, so it is not a Hugging Face model directory the transformers loader can read. Save it with save_pretrained(), or use loader: custom.`);
    return 'transformers';
  }
  return refuse(
    'TORCH_MODEL_DIRECTORY_LOADER',
    `${where} is a directory, ` +
      (spec.loader === 'auto' ? 'without a config.json to say it is a Hugging Face model' : `which the ${spec.loader} loader cannot read (it loads one file)`) +
      '. Use loader: transformers for a Hugging Face model directory, loader: custom with load: "module:function" for anything else, or point the option at the model file.',
  );
}

/** The loader for a file, from the configured one and what the file is. */
export function chooseLoader(format: ModelFormat, spec: ModelSpec): PackagedLoader {
  if (format.kind === 'directory') return directoryLoader(format, spec);
  const { loader, factory } = spec;
  const where = `${spec.option} ${spec.packagePath}`;
  if (loader === 'custom') return 'custom';
  if (loader === 'transformers') refuse('TORCH_MODEL_NOT_HUGGING_FACE', `${spec.option}.loader is "transformers", but ${spec.packagePath} is a file: the transformers loader reads a model directory (config.json and weights). Point the path at the directory save_pretrained() wrote.`);
  const detected: Record<string, PackagedLoader> = { torchscript: 'torchscript', export: 'export', safetensors: 'safetensors' };
  const made = detected[format.kind];
  if (made) {
    if (loader !== 'auto' && loader !== made) {
      refuse('TORCH_MODEL_LOADER_MISMATCH', `${where} is ${format.kind === 'export' ? 'a torch.export program (.pt2)' : format.kind === 'safetensors' ? 'a safetensors file' : 'a TorchScript archive'} but the loader is "${loader}". Use loader: ${made} (or auto).`);
    }
    if (made === 'torchscript' && factory) refuse('TORCH_CONFIG_INVALID', `${where} is a TorchScript archive, which holds its own architecture: remove ${spec.option}.factory.`);
    return made;
  }
  if (loader === 'torchscript' || loader === 'export' || loader === 'safetensors') {
    refuse('TORCH_MODEL_LOADER_MISMATCH', `${spec.option}.loader is "${loader}" but ${spec.packagePath} is a torch.save checkpoint. Save it with ${loader === 'torchscript' ? 'torch.jit.save(torch.jit.script(model), path)' : loader === 'export' ? 'torch.export.save(torch.export.export(model, args), path)' : 'safetensors.torch.save_file(model.state_dict(), path)'}, or choose the loader that matches how it was saved.`);
  }
  if (loader === 'pickle') return 'pickle';
  if (format.kind !== 'torchscript' && 'classes' in format && format.classes.length) {
    refuse(
      'TORCH_MODEL_NEEDS_PICKLE_LOADER',
      `${where} is a pickled module (it names ${format.classes.slice(0, 3).join(', ')}), which ` +
        'a weights-only load refuses because unpickling it runs code. Save model.state_dict() and set ' +
        'loader: state_dict with a factory, or, if you trust the file, set loader: pickle.',
    );
  }
  if (loader === 'state_dict' || (loader === 'auto' && factory)) return 'state_dict';
  return 'weights';
}

// Never part of a model directory: version control, caches, editor and OS files.
const SKIPPED = /^\.|^__pycache__$/;

/** Every file of a model directory (relative posix paths, sorted) with its sha256, streamed. */
async function directoryFiles(dir: string): Promise<{ files: Record<string, string>; bytes: number }> {
  const found: string[] = [];
  let bytes = 0;
  const walk = (at: string, prefix: string) => {
    for (const entry of fs.readdirSync(at, { withFileTypes: true })) {
      if (SKIPPED.test(entry.name)) continue;
      const relative = prefix ? `${prefix}/${entry.name}` : entry.name;
      const stat = fs.statSync(path.join(at, entry.name));
      if (stat.isDirectory()) walk(path.join(at, entry.name), relative);
      else if (stat.isFile()) {
        found.push(relative);
        bytes += stat.size;
      }
    }
  };
  walk(dir, '');
  const files: Record<string, string> = {};
  for (const file of found.sort()) files[file] = await sha256File(path.join(dir, file));
  return { files, bytes };
}

/** A stable key for the model and how it is loaded: functions with the same one share it in a package. */
export function modelId(spec: Pick<ModelSpec, 'packagePath' | 'loader' | 'factory' | 'className' | 'tokenizer' | 'processor' | 'load'>): string {
  const { packagePath, loader, factory, className, tokenizer, processor, load } = spec;
  return `m${sha256(JSON.stringify([packagePath, loader, factory, className, tokenizer, processor, load])).slice(0, 12)}`;
}

/** Looks at the model to settle its loader and catch mistakes before deploying. */
export async function inspectModel(spec: ModelSpec): Promise<ModelManifest> {
  // A custom loader reads whatever its function was written for (ONNX, an index, arrays): the
  // file need not be one torch or safetensors wrote, so it is not sniffed.
  const loader = spec.loader === 'custom' ? 'custom' : chooseLoader(await sniffFormat(spec.sourcePath, `${spec.option} ${spec.packagePath}`), spec);
  const common = {
    id: modelId(spec),
    path: spec.packagePath,
    loader,
    factory: loader === 'state_dict' || loader === 'safetensors' ? spec.factory : null,
    ...(loader === 'transformers' ? { className: spec.className ?? 'AutoModel', tokenizer: spec.tokenizer, processor: spec.processor } : {}),
    ...(loader === 'custom' ? { load: spec.load } : {}),
  };
  if (spec.isDirectory) {
    const { files, bytes } = await directoryFiles(spec.sourcePath);
    const digest = sha256(Object.entries(files).map(([file, fileSha]) => `${file} ${fileSha}`).join('\n'));
    return { ...common, kind: 'directory', sha256: digest, files, bytes };
  }
  return { ...common, kind: 'file', sha256: await sha256File(spec.sourcePath), bytes: fs.statSync(spec.sourcePath).size };
}

/** True when loading the model runs torch.load on pickled weights (what the weights-only bypasses concern). */
export function loadsPickledWeights(model: ModelManifest, format?: { safetensors: boolean }): boolean {
  if (model.loader === 'weights' || model.loader === 'state_dict' || model.loader === 'pickle') return true;
  // transformers reads pytorch_model.bin with torch.load when the directory has no safetensors weights.
  return model.loader === 'transformers' && !Object.keys(model.files ?? {}).some((file) => file.endsWith('.safetensors')) && format?.safetensors !== true;
}
