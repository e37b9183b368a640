import * as fs from 'node:fs';
import { sha256File } from '../util/hash';
import { ResolvedConfig } from '../config/options';
import { TorchError } from '../util/errors';
import { ModelFormat, sniffFormat } from './format';

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

/** The loader the shim uses for this file, from the configured one and what the file is. */
export function chooseLoader(format: ModelFormat, model: ResolvedConfig['model']): PackagedLoader {
  const { packagePath, loader, factory } = model;
  const isTorchScript = format.kind === 'torchscript';
  if (loader === 'torchscript' || (loader === 'auto' && isTorchScript)) {
    if (!isTorchScript) {
      throw new TorchError(
        'TORCH_MODEL_NOT_TORCHSCRIPT',
        `custom.torch.model.loader is "torchscript" but ${packagePath} is not a TorchScript archive. ` +
          'Save it with torch.jit.save(torch.jit.script(model), path), or choose the loader that matches how it was saved.',
      );
    }
    return 'torchscript';
  }
  if (isTorchScript) {
    throw new TorchError(
      'TORCH_MODEL_LOADER_MISMATCH',
      `custom.torch.model ${packagePath} is a TorchScript archive but the loader is "${loader}". Use loader: torchscript (or auto).`,
    );
  }
  if (loader === 'pickle') return 'pickle';
  if (format.classes.length) {
    throw new TorchError(
      'TORCH_MODEL_NEEDS_PICKLE_LOADER',
      `custom.torch.model ${packagePath} is a pickled module (it names ${format.classes.slice(0, 3).join(', ')}), which ` +
        'a weights-only load refuses because unpickling it runs code. Save model.state_dict() and set ' +
        'loader: state_dict with a factory, or, if you trust the file, set loader: pickle.',
    );
  }
  if (loader === 'state_dict' || (loader === 'auto' && factory)) {
    if (!factory) {
      throw new TorchError(
        'TORCH_MODEL_FACTORY_REQUIRED',
        `custom.torch.model.loader is "state_dict" but no factory is set. Add factory: "module:function".`,
      );
    }
    return 'state_dict';
  }
  return 'weights';
}

/** Looks inside the model file to settle the loader and catch mistakes before deploying. */
export async function inspectModel(model: ResolvedConfig['model']): Promise<ModelManifest> {
  const loader = chooseLoader(await sniffFormat(model.sourcePath, model.packagePath), model);
  return {
    path: model.packagePath,
    loader,
    factory: loader === 'state_dict' ? model.factory : null,
    sha256: await sha256File(model.sourcePath),
    bytes: fs.statSync(model.sourcePath).size,
  };
}
