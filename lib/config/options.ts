import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { TorchError } from '../util/errors';

export type Loader = 'auto' | 'torchscript' | 'state_dict' | 'pickle';

/** `custom.torch` as the user writes it. */
export interface TorchOptions {
  /** The model file, or its path with how to load it. Required. */
  model: string | { path: string; loader?: Loader; factory?: string };
  /** A pip requirements file. @default "requirements.txt" when that file exists */
  requirements?: string | false;
  /** The torch version when the requirements do not pin one. @default the newest the index has for the target */
  torchVersion?: string;
  /** Where torch comes from. @default "https://download.pytorch.org/whl/cpu" (CPU-only builds) */
  torchIndexUrl?: string;
  /** The index for every other requirement. @default pip's own configuration */
  indexUrl?: string;
  /** The interpreter on the build machine that runs pip. @default "python3" */
  python?: string;
  /** What to strip from the installed tree beyond the defaults. */
  strip?: { keep?: string[]; remove?: string[]; symbols?: boolean };
  /** Where resolved trees and built layers are kept between runs. @default "$XDG_CACHE_HOME/serverless-torch" or "~/.cache/serverless-torch" */
  cacheDir?: string;
  /** Ship the model with dynamic int8 quantization of its Linear, LSTM and GRU layers. @default false */
  quantize?: false | 'dynamic';
  /** A JSON file holding an input the model accepts, to measure what quantization changes. @default none */
  sampleInput?: string;
  /**
   * Package a model loaded through torch.load with a torch that has a known weights-only bypass
   * (torch < 2.10, see lib/model/safety.ts): only for model files you made or trust. @default false
   */
  allowUnsafeTorch?: boolean;
}

export const DEFAULT_TORCH_INDEX_URL = 'https://download.pytorch.org/whl/cpu';
const LOADERS: Loader[] = ['auto', 'torchscript', 'state_dict', 'pickle'];

/** The options every stage works with: all resolved, all required. */
export interface ResolvedConfig {
  serviceDir: string;
  model: {
    /** Absolute path on the build machine. */
    sourcePath: string;
    /** Posix path inside the function package (relative to /var/task). */
    packagePath: string;
    loader: Loader;
    factory: string | null;
  };
  requirementsPath: string | null;
  torchVersion: string | null;
  torchIndexUrl: string;
  indexUrl: string | null;
  python: string;
  strip: { keep: string[]; remove: string[]; symbols: boolean };
  cacheDir: string;
  quantize: false | 'dynamic';
  /** Absolute path of the sample input file, or null. */
  sampleInput: string | null;
  allowUnsafeTorch: boolean;
}

const stringArray = { type: 'array', items: { type: 'string' } };

/** JSON schema registered with the framework (which only warns on v3; see validateOptions). */
export const customSchema = {
  type: 'object',
  properties: {
    model: {
      anyOf: [
        { type: 'string' },
        {
          type: 'object',
          properties: {
            path: { type: 'string' },
            loader: { enum: LOADERS },
            factory: { type: 'string' },
          },
          required: ['path'],
          additionalProperties: false,
        },
      ],
    },
    requirements: { anyOf: [{ type: 'string' }, { const: false }] },
    // No type: the framework coerces values to the schema's type, which would turn an unquoted 2.10
    // into the string "2.1". Untyped, the number arrives as one and resolveConfig refuses it.
    torchVersion: {},
    torchIndexUrl: { type: 'string' },
    indexUrl: { type: 'string' },
    python: { type: 'string' },
    strip: {
      type: 'object',
      properties: { keep: stringArray, remove: stringArray, symbols: { type: 'boolean' } },
      additionalProperties: false,
    },
    cacheDir: { type: 'string' },
    quantize: { enum: [false, 'dynamic'] },
    sampleInput: { type: 'string' },
    allowUnsafeTorch: { type: 'boolean' },
  },
  required: ['model'],
  additionalProperties: false,
};

export const functionSchema = { torch: { type: 'boolean' } };

const TOP_LEVEL_OPTIONS = Object.keys(customSchema.properties);

function editDistance(a: string, b: string): number {
  const row = Array.from({ length: b.length + 1 }, (_, index) => index);
  for (let i = 1; i <= a.length; i++) {
    let previous = row[0];
    row[0] = i;
    for (let j = 1; j <= b.length; j++) {
      const current = row[j];
      row[j] = Math.min(row[j] + 1, row[j - 1] + 1, previous + (a[i - 1] === b[j - 1] ? 0 : 1));
      previous = current;
    }
  }
  return row[b.length];
}

function suggestion(wrong: string, known: string[]): string {
  const ranked = known
    .map((name) => ({ name, distance: editDistance(wrong.toLowerCase(), name.toLowerCase()) }))
    .sort((a, b) => a.distance - b.distance);
  return ranked.length && ranked[0].distance <= 3 ? ` Did you mean "${ranked[0].name}"?` : '';
}

function describe(value: unknown): string {
  return JSON.stringify(value) ?? String(value);
}

function invalid(option: string, value: unknown, expected: string): TorchError {
  return new TorchError(
    'TORCH_CONFIG_INVALID',
    `custom.torch.${option} is ${describe(value)}, but it must be ${expected}.`,
  );
}

function unknownOption(where: string, name: string, known: string[]): TorchError {
  return new TorchError(
    'TORCH_CONFIG_UNKNOWN_OPTION',
    `${where}.${name} is not an option of serverless-torch.${suggestion(name, known)} ` +
      `Options there: ${known.join(', ')}.`,
  );
}

function checkString(option: string, value: unknown): string | undefined {
  if (value === undefined) return undefined;
  if (typeof value !== 'string' || value.trim() === '') throw invalid(option, value, 'a non-empty string');
  return value;
}

function checkGlobs(option: string, value: unknown): string[] {
  if (value === undefined) return [];
  if (!Array.isArray(value) || value.some((item) => typeof item !== 'string' || item === '')) {
    throw invalid(option, value, 'a list of glob patterns (strings)');
  }
  return value as string[];
}

function defaultCacheDir(): string {
  const base = process.env.XDG_CACHE_HOME || path.join(os.homedir(), '.cache');
  return path.join(base, 'serverless-torch');
}

/**
 * Checks `custom.torch` as the framework hands it over and resolves every default.
 * The framework v3 only warns about schema violations, so each rule is enforced here.
 */
export function resolveConfig(raw: unknown, serviceDir: string): ResolvedConfig {
  if (raw === undefined || raw === null) {
    throw new TorchError(
      'TORCH_CONFIG_MISSING',
      'custom.torch is not set. serverless-torch needs at least the model: add\n' +
        'custom:\n  torch:\n    model: model/model.pt',
    );
  }
  if (typeof raw !== 'object' || Array.isArray(raw)) {
    throw new TorchError('TORCH_CONFIG_INVALID', `custom.torch is ${describe(raw)}, but it must be an object with at least "model".`);
  }
  const options = raw as Record<string, unknown>;
  for (const name of Object.keys(options)) {
    if (!TOP_LEVEL_OPTIONS.includes(name)) throw unknownOption('custom.torch', name, TOP_LEVEL_OPTIONS);
  }

  const model = resolveModel(options.model, serviceDir);

  let requirementsPath: string | null = null;
  if (options.requirements === false) {
    requirementsPath = null;
  } else if (options.requirements === undefined) {
    const candidate = path.join(serviceDir, 'requirements.txt');
    requirementsPath = fs.existsSync(candidate) ? candidate : null;
  } else {
    const given = checkString('requirements', options.requirements);
    if (given === undefined) throw invalid('requirements', options.requirements, 'a file path or false');
    requirementsPath = path.resolve(serviceDir, given);
    if (!fs.existsSync(requirementsPath)) {
      throw new TorchError(
        'TORCH_REQUIREMENTS_NOT_FOUND',
        `custom.torch.requirements is "${given}", but ${requirementsPath} does not exist. ` +
          'Point it at your requirements file, or remove the option (requirements.txt is used when present).',
      );
    }
  }

  if (typeof options.torchVersion === 'number') {
    throw new TorchError(
      'TORCH_CONFIG_INVALID',
      `custom.torch.torchVersion is ${options.torchVersion}, a YAML number (an unquoted 2.10 reads as 2.1), but it must be ` +
        'a string: quote it, for example torchVersion: "2.13.0".',
    );
  }
  const torchVersion = checkString('torchVersion', options.torchVersion) ?? null;
  if (torchVersion !== null && !/^\d+(\.\d+){0,2}(\+[a-z0-9.]+)?$/i.test(torchVersion)) {
    throw invalid('torchVersion', torchVersion, 'a version such as "2.13.0"');
  }
  const torchIndexUrl = checkUrl('torchIndexUrl', options.torchIndexUrl) ?? DEFAULT_TORCH_INDEX_URL;
  const indexUrl = checkUrl('indexUrl', options.indexUrl) ?? null;
  const python = checkString('python', options.python) ?? 'python3';

  let strip: ResolvedConfig['strip'] = { keep: [], remove: [], symbols: true };
  if (options.strip !== undefined) {
    if (typeof options.strip !== 'object' || options.strip === null || Array.isArray(options.strip)) {
      throw invalid('strip', options.strip, 'an object with keep, remove and symbols');
    }
    const given = options.strip as Record<string, unknown>;
    const known = ['keep', 'remove', 'symbols'];
    for (const name of Object.keys(given)) {
      if (!known.includes(name)) throw unknownOption('custom.torch.strip', name, known);
    }
    if (given.symbols !== undefined && typeof given.symbols !== 'boolean') {
      throw invalid('strip.symbols', given.symbols, 'true or false');
    }
    strip = {
      keep: checkGlobs('strip.keep', given.keep),
      remove: checkGlobs('strip.remove', given.remove),
      symbols: given.symbols !== false,
    };
  }
  const cacheOption = checkString('cacheDir', options.cacheDir);
  const cacheDir = cacheOption ? path.resolve(serviceDir, cacheOption) : defaultCacheDir();
  const quantize = resolveQuantize(options.quantize);
  const sampleInput = resolveSampleInput(options.sampleInput, serviceDir);
  if (options.allowUnsafeTorch !== undefined && typeof options.allowUnsafeTorch !== 'boolean') {
    throw invalid('allowUnsafeTorch', options.allowUnsafeTorch, 'true or false');
  }

  return {
    serviceDir,
    model,
    requirementsPath,
    torchVersion,
    torchIndexUrl,
    indexUrl,
    python,
    strip,
    cacheDir,
    quantize,
    sampleInput,
    allowUnsafeTorch: options.allowUnsafeTorch === true,
  };
}

function resolveQuantize(value: unknown): ResolvedConfig['quantize'] {
  if (value === undefined || value === false) return false;
  if (value === 'dynamic') return 'dynamic';
  if (typeof value === 'string' && /^(float16|fp16|half)$/i.test(value)) {
    // Measured with torch 2.13 (FACTS §7): a 1,600,149-byte Linear state dict is 1,602,047 bytes
    // after float16 dynamic quantization, because the packed weights are saved as float32.
    throw new TorchError(
      'TORCH_QUANTIZE_FLOAT16_UNSUPPORTED',
      `custom.torch.quantize is "${value}", but float16 dynamic quantization does not shrink the saved model ` +
        '(torch keeps float32 weights in the file), so it would only cost accuracy. Use quantize: dynamic (int8 weights, about 4x smaller).',
    );
  }
  throw invalid('quantize', value, 'false or "dynamic" (int8 weights for Linear, LSTM and GRU layers)');
}

function resolveSampleInput(value: unknown, serviceDir: string): string | null {
  const given = checkString('sampleInput', value);
  if (given === undefined) return null;
  const sampleInput = path.resolve(serviceDir, given);
  if (!fs.existsSync(sampleInput) || !fs.statSync(sampleInput).isFile()) {
    throw new TorchError(
      'TORCH_SAMPLE_INPUT_NOT_FOUND',
      `custom.torch.sampleInput is "${given}", but ${sampleInput} is not a file. Point it at a JSON file holding ` +
        'an input the model accepts (relative to the service directory), or remove the option.',
    );
  }
  return sampleInput;
}

function checkUrl(option: string, value: unknown): string | undefined {
  const url = checkString(option, value);
  if (url === undefined) return undefined;
  if (!/^(https?|file):\/\//.test(url)) {
    throw invalid(option, url, 'an http(s):// or file:// index URL such as "https://download.pytorch.org/whl/cpu"');
  }
  return url;
}

function resolveModel(value: unknown, serviceDir: string): ResolvedConfig['model'] {
  if (value === undefined) {
    throw new TorchError(
      'TORCH_MODEL_NOT_SET',
      'custom.torch.model is not set. Point it at the model file, for example "model: model/model.pt".',
    );
  }
  let givenPath: string;
  let loader: Loader = 'auto';
  let factory: string | null = null;
  if (typeof value === 'string') {
    givenPath = value;
  } else if (typeof value === 'object' && value !== null && !Array.isArray(value)) {
    const given = value as Record<string, unknown>;
    const known = ['path', 'loader', 'factory'];
    for (const name of Object.keys(given)) {
      if (!known.includes(name)) throw unknownOption('custom.torch.model', name, known);
    }
    const modelPath = checkString('model.path', given.path);
    if (modelPath === undefined) throw invalid('model.path', given.path, 'the path of the model file');
    givenPath = modelPath;
    if (given.loader !== undefined) {
      if (typeof given.loader !== 'string' || !LOADERS.includes(given.loader as Loader)) {
        throw invalid('model.loader', given.loader, `one of ${LOADERS.join(', ')}`);
      }
      loader = given.loader as Loader;
    }
    const factoryGiven = checkString('model.factory', given.factory);
    if (factoryGiven !== undefined) {
      if (!/^[A-Za-z_][\w]*(\.[A-Za-z_][\w]*)*:[A-Za-z_][\w]*(\.[A-Za-z_][\w]*)*$/.test(factoryGiven)) {
        throw invalid('model.factory', factoryGiven, 'a "package.module:function" reference such as "net:build"');
      }
      factory = factoryGiven;
    }
  } else {
    throw invalid('model', value, 'a file path or { path, loader, factory }');
  }
  if (loader === 'state_dict' && factory === null) {
    throw new TorchError(
      'TORCH_MODEL_FACTORY_REQUIRED',
      `custom.torch.model.loader is "state_dict" but no factory is set: a state dict holds only weights. ` +
        'Add factory: "module:function" naming a function in your code that builds the nn.Module.',
    );
  }
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
  return { sourcePath, packagePath, loader, factory };
}
