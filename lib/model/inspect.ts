import * as fs from 'node:fs';
import { sha256File } from '../util/hash';
import { ResolvedConfig } from '../config/options';
import { TorchError } from '../util/errors';
import { readZipEntry, readZipIndex } from '../zip/read';

export type PackagedLoader = 'torchscript' | 'state_dict' | 'weights' | 'pickle';

/** What the shim needs to load the model (serverless_torch/manifest.json "model"). */
export interface ModelManifest {
  path: string;
  loader: PackagedLoader;
  factory: string | null;
  sha256: string;
  bytes: number;
  /** Set when the packaged file is a dynamically quantized model (lib/model/quantize.ts). */
  quantized?: QuantizedManifest;
}

/** How the shim treats a quantized model (manifest.json "model.quantized"). */
export interface QuantizedManifest {
  /** torch dtype of the weights: "qint8". */
  dtype: string;
  /** torch.nn layer types quantized; the shim quantizes the factory's module alike before a state dict is loaded. */
  modules: string[];
  /** Quantized engine by platform.machine() of the sandbox; machines not listed keep torch's default. */
  engines: Record<string, string>;
}

// Globals a weights-only load accepts (tensors, storages, containers). A checkpoint that names
// any other class is a pickled module: loading it runs code, so it needs the explicit pickle loader.
const WEIGHTS_ONLY_MODULES = /^(torch|torch\._utils|torch\._tensor|torch\.storage|torch\.serialization|collections|builtins|__builtin__|_codecs)$/;

export function picklesClasses(pickle: Buffer): string[] {
  const text = pickle.toString('latin1');
  const classes = new Set<string>();
  for (const match of text.matchAll(/c([A-Za-z_][\w.]*)\n([A-Za-z_][\w.]*)\n/g)) {
    if (!WEIGHTS_ONLY_MODULES.test(match[1])) classes.add(`${match[1]}.${match[2]}`);
  }
  return [...classes];
}


/** Looks inside the model file to settle the loader and catch mistakes before deploying. */
export async function inspectModel(model: ResolvedConfig['model']): Promise<ModelManifest> {
  const { sourcePath, packagePath, loader, factory } = model;
  const head = Buffer.alloc(4);
  const fd = fs.openSync(sourcePath, 'r');
  try {
    fs.readSync(fd, head, 0, 4, 0);
  } finally {
    fs.closeSync(fd);
  }
  const isZip = head.readUInt32LE(0) === 0x04034b50;
  const isLegacyPickle = head[0] === 0x80;
  if (!isZip && !isLegacyPickle) {
    throw new TorchError(
      'TORCH_MODEL_UNKNOWN_FORMAT',
      `custom.torch.model ${packagePath} is not a file torch.save or torch.jit.save wrote (it starts with ` +
        `0x${head.toString('hex')}). Save the model with torch.save(model.state_dict(), path) or torch.jit.save.`,
    );
  }
  let isTorchScript = false;
  let classes: string[] = [];
  if (isZip) {
    let names: string[];
    try {
      names = (await readZipIndex(sourcePath)).map((entry) => entry.name);
    } catch (error) {
      throw new TorchError(
        'TORCH_MODEL_UNKNOWN_FORMAT',
        `custom.torch.model ${packagePath} is a damaged zip file (${(error as Error).message}). Save the model again.`,
        { cause: error },
      );
    }
    isTorchScript = names.some((name) => /^[^/]+\/constants\.pkl$/.test(name)) && names.some((name) => /^[^/]+\/code\//.test(name));
    const dataPickle = names.find((name) => /^[^/]+\/data\.pkl$/.test(name));
    if (!isTorchScript && !dataPickle) {
      throw new TorchError(
        'TORCH_MODEL_UNKNOWN_FORMAT',
        `custom.torch.model ${packagePath} is a zip file but not a torch checkpoint (no data.pkl inside). ` +
          'Save the model with torch.save or torch.jit.save.',
      );
    }
    if (!isTorchScript && dataPickle) classes = picklesClasses(await readZipEntry(sourcePath, dataPickle));
  }
  let resolved: PackagedLoader;
  if (loader === 'torchscript' || (loader === 'auto' && isTorchScript)) {
    if (!isTorchScript) {
      throw new TorchError(
        'TORCH_MODEL_NOT_TORCHSCRIPT',
        `custom.torch.model.loader is "torchscript" but ${packagePath} is not a TorchScript archive. ` +
          'Save it with torch.jit.save(torch.jit.script(model), path), or choose the loader that matches how it was saved.',
      );
    }
    resolved = 'torchscript';
  } else if (isTorchScript) {
    throw new TorchError(
      'TORCH_MODEL_LOADER_MISMATCH',
      `custom.torch.model ${packagePath} is a TorchScript archive but the loader is "${loader}". Use loader: torchscript (or auto).`,
    );
  } else if (loader === 'pickle') {
    resolved = 'pickle';
  } else if (classes.length) {
    throw new TorchError(
      'TORCH_MODEL_NEEDS_PICKLE_LOADER',
      `custom.torch.model ${packagePath} is a pickled module (it names ${classes.slice(0, 3).join(', ')}), which ` +
        'a weights-only load refuses because unpickling it runs code. Save model.state_dict() and set ' +
        'loader: state_dict with a factory, or, if you trust the file, set loader: pickle.',
    );
  } else if (loader === 'state_dict' || (loader === 'auto' && factory)) {
    resolved = 'state_dict';
  } else {
    resolved = 'weights';
  }
  if (resolved === 'state_dict' && !factory) {
    throw new TorchError(
      'TORCH_MODEL_FACTORY_REQUIRED',
      `custom.torch.model.loader is "state_dict" but no factory is set. Add factory: "module:function".`,
    );
  }
  return {
    path: packagePath,
    loader: resolved,
    factory: resolved === 'state_dict' ? factory : null,
    sha256: await sha256File(sourcePath),
    bytes: fs.statSync(sourcePath).size,
  };
}
