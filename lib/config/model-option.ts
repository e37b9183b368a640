import * as fs from 'node:fs';
import * as path from 'node:path';
import { TorchError } from '../util/errors';
import { checkString, describe, unknownOption } from './checks';
import { LOADERS, Loader, MODEL_STORES, ModelSpec, ModelStore } from './options';

const MODULE_FUNCTION = /^[A-Za-z_][\w]*(\.[A-Za-z_][\w]*)*:[A-Za-z_][\w]*(\.[A-Za-z_][\w]*)*$/;
const AUTO_CLASS = /^[A-Za-z_][\w]*$/;
const MODEL_KEYS = ['path', 'loader', 'factory', 'class', 'tokenizer', 'processor', 'load', 'store'];

function invalidAt(option: string, value: unknown, expected: string): TorchError {
  return new TorchError('TORCH_CONFIG_INVALID', `${option} is ${describe(value)}, but it must be ${expected}.`);
}

/** A "module:function" reference, or null when not given. */
function moduleFunction(option: string, value: unknown, example: string): string | null {
  const given = checkString(option, value);
  if (given === undefined) return null;
  if (!MODULE_FUNCTION.test(given)) throw invalidAt(option, given, `a "package.module:function" reference such as "${example}"`);
  return given;
}

/** An Auto class name, true for the default one, or null when not given. */
function autoClass(option: string, value: unknown, whenTrue: string): string | null {
  if (value === undefined || value === false) return null;
  if (value === true) return whenTrue;
  if (typeof value !== 'string' || !AUTO_CLASS.test(value)) throw invalidAt(option, value, `true or the name of a transformers Auto class such as "${whenTrue}"`);
  return value;
}

type ModelFields = Omit<ModelSpec, 'option' | 'sourcePath' | 'packagePath' | 'isDirectory'> & { givenPath: string };

/** The model option as written: a path, or an object with the path and how to load it. */
function parseModelOption(value: unknown, option: string): ModelFields {
  const plain = { loader: 'auto' as Loader, factory: null, className: null, tokenizer: null, processor: null, load: null, store: 'auto' as ModelStore };
  if (typeof value === 'string' && value.trim() !== '') return { givenPath: value, ...plain };
  if (typeof value !== 'object' || value === null || Array.isArray(value)) {
    throw invalidAt(option, value, 'a path, false, or { path, loader, factory, class, tokenizer, processor, load, store }');
  }
  const given = value as Record<string, unknown>;
  for (const name of Object.keys(given)) {
    if (!MODEL_KEYS.includes(name)) throw unknownOption(option, name, MODEL_KEYS);
  }
  const givenPath = checkString(`${option}.path`, given.path);
  if (givenPath === undefined) throw invalidAt(`${option}.path`, given.path, 'the path of the model file or directory');
  if (given.loader !== undefined && (typeof given.loader !== 'string' || !LOADERS.includes(given.loader as Loader))) {
    throw invalidAt(`${option}.loader`, given.loader, `one of ${LOADERS.join(', ')}`);
  }
  const fields: ModelFields = {
    givenPath,
    loader: (given.loader as Loader | undefined) ?? 'auto',
    factory: moduleFunction(`${option}.factory`, given.factory, 'net:build'),
    className: autoClass(`${option}.class`, given.class, 'AutoModel'),
    tokenizer: autoClass(`${option}.tokenizer`, given.tokenizer, 'AutoTokenizer'),
    processor: autoClass(`${option}.processor`, given.processor, 'AutoProcessor'),
    load: moduleFunction(`${option}.load`, given.load, 'loaders:load_model'),
    store: (given.store as ModelStore | undefined) ?? 'auto',
  };
  if (given.store !== undefined && !MODEL_STORES.includes(given.store as ModelStore)) {
    throw invalidAt(`${option}.store`, given.store, `one of ${MODEL_STORES.join(', ')} (auto: the function zip when the model fits, else S3)`);
  }
  checkLoaderOptions(fields, option);
  return fields;
}

/** Options that belong to one loader are refused with another: they would be silently ignored. */
function checkLoaderOptions(fields: ModelFields, option: string): void {
  const { loader } = fields;
  if (loader === 'state_dict' && fields.factory === null) {
    throw new TorchError(
      'TORCH_MODEL_FACTORY_REQUIRED',
      `${option}.loader is "state_dict" but no factory is set: a state dict holds only weights. ` +
        'Add factory: "module:function" naming a function in your code that builds the nn.Module.',
    );
  }
  if (loader === 'custom' && fields.load === null) {
    throw new TorchError(
      'TORCH_MODEL_LOAD_REQUIRED',
      `${option}.loader is "custom" but no load function is set. Add load: "module:function" naming a function ` +
        'in your code that receives the model path and returns what the handler gets.',
    );
  }
  const transformersOnly = (['className', 'tokenizer', 'processor'] as const).filter((key) => fields[key] !== null);
  if (transformersOnly.length && loader !== 'transformers' && loader !== 'auto') {
    const names = transformersOnly.map((key) => (key === 'className' ? 'class' : key));
    throw new TorchError('TORCH_CONFIG_INVALID', `${option} sets ${names.join(', ')}, which only the transformers loader reads, but its loader is "${loader}". Remove ${names.join(', ')} or set loader: transformers.`);
  }
  if (fields.load !== null && loader !== 'custom') {
    throw new TorchError('TORCH_CONFIG_INVALID', `${option} sets load, which only the custom loader calls, but its loader is "${loader}". Set loader: custom, or remove load.`);
  }
}

/** The model file or directory inside the service: where it is on this machine and where it goes in the function package. */
function locateModel(givenPath: string, serviceDir: string, option: string): { sourcePath: string; packagePath: string; isDirectory: boolean } {
  const sourcePath = path.resolve(serviceDir, givenPath);
  const packagePath = path.relative(serviceDir, sourcePath).split(path.sep).join('/');
  if (packagePath === '' || packagePath.startsWith('..') || path.isAbsolute(packagePath)) {
    throw new TorchError(
      'TORCH_MODEL_OUTSIDE_SERVICE',
      `${option} is "${givenPath}", which is not inside the service directory ${serviceDir}. ` +
        'Move the model into the service (for example model/model.pt) so it is packaged with the function.',
    );
  }
  let stat: fs.Stats;
  try {
    stat = fs.statSync(sourcePath);
  } catch {
    throw new TorchError(
      'TORCH_MODEL_NOT_FOUND',
      `${option} is "${givenPath}", but ${sourcePath} does not exist. ` +
        'Check the path (it is relative to the service directory) or create the model file first.',
    );
  }
  if (!stat.isFile() && !stat.isDirectory()) {
    throw new TorchError('TORCH_MODEL_NOT_A_FILE', `${option} is "${givenPath}", but ${sourcePath} is neither a file nor a directory. Point it at the saved model.`);
  }
  try {
    fs.accessSync(sourcePath, fs.constants.R_OK);
  } catch {
    throw new TorchError('TORCH_MODEL_UNREADABLE', `${option} is "${givenPath}", but ${sourcePath} cannot be read. Fix its permissions.`);
  }
  return { sourcePath, packagePath, isDirectory: stat.isDirectory() };
}

/**
 * Resolves a model option (custom.torch.model, functions.X.torch.model): its form, then the file
 * or directory it names inside the service. False is no model.
 */
export function resolveModel(value: unknown, serviceDir: string, option = 'custom.torch.model'): ModelSpec | null {
  if (value === false) return null;
  const { givenPath, ...fields } = parseModelOption(value, option);
  return { option, ...locateModel(givenPath, serviceDir, option), ...fields };
}

/**
 * The model of one torch function: its own (functions.X.torch.model, false for none), else the
 * service's default (custom.torch.model). A function with neither is a mistake named here.
 */
export function functionModel(torch: unknown, functionName: string, defaults: { serviceDir: string; configured: boolean; model: ModelSpec | null; noDefaultModel: boolean }): ModelSpec | null {
  const option = `functions.${functionName}.torch`;
  if (torch !== undefined && typeof torch !== 'boolean') {
    if (typeof torch !== 'object' || torch === null || Array.isArray(torch)) throw invalidAt(option, torch, 'true, false or { model }');
    for (const name of Object.keys(torch)) if (name !== 'model') throw unknownOption(option, name, ['model']);
    const own = (torch as { model?: unknown }).model;
    if (own !== undefined) return resolveModel(own, defaults.serviceDir, `${option}.model`);
  }
  if (defaults.model || defaults.noDefaultModel) return defaults.model;
  throw new TorchError(
    defaults.configured ? 'TORCH_MODEL_NOT_SET' : 'TORCH_CONFIG_MISSING',
    `Function "${functionName}" uses torch but has no model: set custom.torch.model (the model of every torch function), ` +
      `${option}.model (its own), or ${option}.model: false for a function that loads none. For example:\n` +
      'custom:\n  torch:\n    model: model/model.pt',
  );
}
