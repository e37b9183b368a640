import * as fs from 'node:fs';
import * as path from 'node:path';
import { TorchError } from '../util/errors';
import { checkString, invalid, unknownOption } from './checks';
import { LOADERS, Loader, ResolvedConfig } from './options';

/** The model option as written: a path, or { path, loader, factory }. */
interface ModelOption {
  givenPath: string;
  loader: Loader;
  factory: string | null;
}

/** Resolves custom.torch.model: its form, then the file it names inside the service. */
export function resolveModel(value: unknown, serviceDir: string): ResolvedConfig['model'] {
  const option = parseModelOption(value);
  return { ...locateModelFile(option.givenPath, serviceDir), loader: option.loader, factory: option.factory };
}

function parseModelOption(value: unknown): ModelOption {
  if (value === undefined) {
    throw new TorchError(
      'TORCH_MODEL_NOT_SET',
      'custom.torch.model is not set. Point it at the model file, for example "model: model/model.pt".',
    );
  }
  if (typeof value === 'string') return { givenPath: value, loader: 'auto', factory: null };
  if (typeof value !== 'object' || value === null || Array.isArray(value)) {
    throw invalid('model', value, 'a file path or { path, loader, factory }');
  }
  const given = value as Record<string, unknown>;
  const known = ['path', 'loader', 'factory'];
  for (const name of Object.keys(given)) {
    if (!known.includes(name)) throw unknownOption('custom.torch.model', name, known);
  }
  const givenPath = checkString('model.path', given.path);
  if (givenPath === undefined) throw invalid('model.path', given.path, 'the path of the model file');
  if (given.loader !== undefined && (typeof given.loader !== 'string' || !LOADERS.includes(given.loader as Loader))) {
    throw invalid('model.loader', given.loader, `one of ${LOADERS.join(', ')}`);
  }
  const loader = (given.loader as Loader | undefined) ?? 'auto';
  const factory = checkString('model.factory', given.factory) ?? null;
  if (factory !== null && !/^[A-Za-z_][\w]*(\.[A-Za-z_][\w]*)*:[A-Za-z_][\w]*(\.[A-Za-z_][\w]*)*$/.test(factory)) {
    throw invalid('model.factory', factory, 'a "package.module:function" reference such as "net:build"');
  }
  if (loader === 'state_dict' && factory === null) {
    throw new TorchError(
      'TORCH_MODEL_FACTORY_REQUIRED',
      `custom.torch.model.loader is "state_dict" but no factory is set: a state dict holds only weights. ` +
        'Add factory: "module:function" naming a function in your code that builds the nn.Module.',
    );
  }
  return { givenPath, loader, factory };
}

/** The model file inside the service: where it is on this machine and where it goes in the function package. */
function locateModelFile(givenPath: string, serviceDir: string): { sourcePath: string; packagePath: string } {
  const sourcePath = path.resolve(serviceDir, givenPath);
  const packagePath = path.relative(serviceDir, sourcePath).split(path.sep).join('/');
  if (packagePath.startsWith('..') || path.isAbsolute(packagePath)) {
    throw new TorchError(
      'TORCH_MODEL_OUTSIDE_SERVICE',
      `custom.torch.model is "${givenPath}", which is outside the service directory ${serviceDir}. ` +
        'Move the model into the service (for example model/model.pt) so it is packaged with the function.',
    );
  }
  let stat: fs.Stats;
  try {
    stat = fs.statSync(sourcePath);
  } catch {
    throw new TorchError(
      'TORCH_MODEL_NOT_FOUND',
      `custom.torch.model is "${givenPath}", but ${sourcePath} does not exist. ` +
        'Check the path (it is relative to the service directory) or create the model file first.',
    );
  }
  if (!stat.isFile()) {
    throw new TorchError(
      'TORCH_MODEL_NOT_A_FILE',
      `custom.torch.model is "${givenPath}", but ${sourcePath} is not a file. Point it at the saved model file.`,
    );
  }
  try {
    fs.accessSync(sourcePath, fs.constants.R_OK);
  } catch {
    throw new TorchError(
      'TORCH_MODEL_UNREADABLE',
      `custom.torch.model is "${givenPath}", but ${sourcePath} cannot be read. Fix its permissions.`,
    );
  }
  return { sourcePath, packagePath };
}
