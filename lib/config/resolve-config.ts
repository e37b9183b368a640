import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { TorchError } from '../util/errors';
import { checkGlobs, checkString, checkUrl, describe, invalid, unknownOption } from './checks';
import { resolveModel } from './model-option';
import { findRequirements } from './requirements';
import { DEFAULT_TORCH_INDEX_URL, ResolvedConfig } from './options';
import { TOP_LEVEL_OPTIONS } from './schema';

function defaultCacheDir(): string {
  const base = process.env.XDG_CACHE_HOME || path.join(os.homedir(), '.cache');
  return path.join(base, 'serverless-torch');
}

/**
 * Checks `custom.torch` as the framework hands it over and resolves every default.
 * The framework v3 only warns about schema violations, so each rule is enforced here.
 */
export function resolveConfig(raw: unknown, serviceDir: string): ResolvedConfig {
  if (raw !== undefined && raw !== null && (typeof raw !== 'object' || Array.isArray(raw))) {
    throw new TorchError('TORCH_CONFIG_INVALID', `custom.torch is ${describe(raw)}, but it must be an object (for example with "model").`);
  }
  const options = (raw ?? {}) as Record<string, unknown>;
  for (const name of Object.keys(options)) {
    if (!TOP_LEVEL_OPTIONS.includes(name)) throw unknownOption('custom.torch', name, TOP_LEVEL_OPTIONS);
  }
  const cacheOption = checkString('cacheDir', options.cacheDir);
  if (options.allowUnsafeTorch !== undefined && typeof options.allowUnsafeTorch !== 'boolean') {
    throw invalid('allowUnsafeTorch', options.allowUnsafeTorch, 'true or false');
  }
  return {
    serviceDir,
    configured: raw !== undefined && raw !== null,
    model: options.model === undefined ? null : resolveModel(options.model, serviceDir),
    noDefaultModel: options.model === false,
    requirementsPath: resolveRequirementsPath(options.requirements, serviceDir),
    torchVersion: resolveTorchVersion(options.torchVersion),
    torchIndexUrl: checkUrl('torchIndexUrl', options.torchIndexUrl) ?? DEFAULT_TORCH_INDEX_URL,
    indexUrl: checkUrl('indexUrl', options.indexUrl) ?? null,
    python: checkString('python', options.python) ?? 'python3',
    strip: resolveStrip(options.strip),
    cacheDir: cacheOption ? path.resolve(serviceDir, cacheOption) : defaultCacheDir(),
    quantize: resolveQuantize(options.quantize),
    sampleInput: resolveSampleInput(options.sampleInput, serviceDir),
    allowUnsafeTorch: options.allowUnsafeTorch === true,
  };
}

/** What the service's requirements are in when nothing is said (lib/config/requirements.ts); the file given, which must exist; none for false. */
function resolveRequirementsPath(value: unknown, serviceDir: string): string | null {
  if (value === false) return null;
  if (value === undefined) return findRequirements(serviceDir);
  const given = checkString('requirements', value);
  if (given === undefined) throw invalid('requirements', value, 'a file path or false');
  const requirementsPath = path.resolve(serviceDir, given);
  if (!fs.existsSync(requirementsPath)) {
    throw new TorchError(
      'TORCH_REQUIREMENTS_NOT_FOUND',
      `custom.torch.requirements is "${given}", but ${requirementsPath} does not exist. ` +
        'Point it at your requirements file, or remove the option (requirements.txt is used when present).',
    );
  }
  return requirementsPath;
}

function resolveTorchVersion(value: unknown): string | null {
  if (typeof value === 'number') {
    throw new TorchError(
      'TORCH_CONFIG_INVALID',
      `custom.torch.torchVersion is ${value}, a YAML number (an unquoted 2.10 reads as 2.1), but it must be ` +
        'a string: quote it, for example torchVersion: "2.13.0".',
    );
  }
  const torchVersion = checkString('torchVersion', value) ?? null;
  if (torchVersion !== null && !/^\d+(\.\d+){0,2}(\+[a-z0-9.]+)?$/i.test(torchVersion)) {
    throw invalid('torchVersion', torchVersion, 'a version such as "2.13.0"');
  }
  return torchVersion;
}

function resolveStrip(value: unknown): ResolvedConfig['strip'] {
  if (value === undefined) return { keep: [], remove: [], symbols: true };
  if (typeof value !== 'object' || value === null || Array.isArray(value)) {
    throw invalid('strip', value, 'an object with keep, remove and symbols');
  }
  const given = value as Record<string, unknown>;
  const known = ['keep', 'remove', 'symbols'];
  for (const name of Object.keys(given)) {
    if (!known.includes(name)) throw unknownOption('custom.torch.strip', name, known);
  }
  if (given.symbols !== undefined && typeof given.symbols !== 'boolean') {
    throw invalid('strip.symbols', given.symbols, 'true or false');
  }
  return {
    keep: checkGlobs('strip.keep', given.keep),
    remove: checkGlobs('strip.remove', given.remove),
    symbols: given.symbols !== false,
  };
}

function resolveQuantize(value: unknown): ResolvedConfig['quantize'] {
  if (value === undefined || value === false) return false;
  if (value === 'dynamic') return 'dynamic';
  if (typeof value === 'string' && /^(float16|fp16|half)$/i.test(value)) {
    // Measured with torch 2.13: a 1,600,149-byte Linear state dict is 1,602,047 bytes
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
