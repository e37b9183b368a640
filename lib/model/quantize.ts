import * as fs from 'node:fs';
import * as path from 'node:path';
import { CacheLayout, cacheKey, memo } from '../util/cache';
import { sha256, sha256File } from '../util/hash';
import { ResolvedConfig } from '../config/options';
import { TorchError } from '../util/errors';
import { formatBytes, formatSeconds } from '../util/format';
import { HostTorch, ensureHostTorch, hostPythonArgs } from './host-torch';
import { ModelManifest, PackagedModel } from './inspect';
import { lastLines } from '../resolve/pip-failure';
import { Runner } from '../util/process';
import { Reporter } from '../util/reporter';
import { BUILD_SCRIPTS_DIR, PLUGIN_VERSION } from '../util/plugin-paths';

export const QUANTIZE_SCRIPT = path.join(BUILD_SCRIPTS_DIR, 'quantize.py');

/**
 * What `quantize: dynamic` means: torch.ao.quantization.quantize_dynamic with these. Measured with
 * torch 2.13: a Linear-heavy state dict comes out 3.98x smaller, largest output difference 0.012.
 */
export const QUANTIZED_DTYPE = 'qint8';
export const QUANTIZED_MODULES = ['Linear', 'LSTM', 'GRU'];
// ARM builds of torch run quantized ops only with the qnnpack engine (the default engine fails
// there); x86 keeps torch's default (x86/fbgemm).
// Keyed by machine rather than fixed per package: one function zip can serve both architectures.
export const QUANTIZED_ENGINES: Record<string, string> = { aarch64: 'qnnpack' };

/** The model measured under one quantized engine on the build machine (one thread). */
export interface EngineMeasurement {
  /** The packaged file loaded the way the shim loads it. */
  loaded: boolean;
  maxAbsDiff?: number;
  /** maxAbsDiff over the largest magnitude of the float output (elementwise ratios explode near zero). */
  maxRelDiff?: number | null;
  /** Median milliseconds per call. */
  floatMs?: number;
  quantizedMs?: number;
  calls?: number;
}

/** What quantization did, as kept in the cache with the quantized file. */
export interface QuantizationRecord {
  quantized: boolean;
  torchVersion: string;
  /** The loader of the packaged file. */
  loader: ModelManifest['loader'];
  floatBytes: number;
  bytes: number;
  /** Quantized layers by torch.nn type. */
  layers: Record<string, number>;
  notes: string[];
  /** The engine torch picks on the build machine: what x86_64 functions use. */
  hostEngine: string;
  engines: Record<string, EngineMeasurement>;
}

export interface QuantizationReport extends QuantizationRecord {
  /** sampleInput as the user wrote it, or null. */
  sampleInput: string | null;
  /** True when the cached result was used and nothing ran. */
  reused: boolean;
}


const MODEL_FILE = 'model.pt';
const RECORD_FILE = 'quantization.json';

// Never the factory's imports: dependencies, build output, caches, version control.
const NOT_SERVICE_CODE = new Set(['node_modules', '.serverless', '__pycache__', '.git', '.venv', 'venv']);

/**
 * A digest of every .py file of the service: the factory builds the module with whatever of the
 * service's code it imports, and a change in any of it can change what the weights mean. One
 * file's digest missed changes in the modules the factory imports.
 */
export async function serviceSourcesDigest(serviceDir: string): Promise<string> {
  const files: string[] = [];
  const walk = (dir: string, prefix: string) => {
    for (const entry of fs.readdirSync(dir, { withFileTypes: true })) {
      if (NOT_SERVICE_CODE.has(entry.name)) continue;
      const relative = prefix ? `${prefix}/${entry.name}` : entry.name;
      if (entry.isDirectory()) walk(path.join(dir, entry.name), relative);
      else if (entry.isFile() && entry.name.endsWith('.py')) files.push(relative);
    }
  };
  walk(serviceDir, '');
  const digests: string[] = [];
  for (const file of files.sort()) digests.push(`${file}:${await sha256File(path.join(serviceDir, file))}`);
  return sha256(digests.join('\n'));
}

/** Engines the build script measures: torch's default for x86_64 functions, qnnpack for arm64 ones. */
export function enginesFor(architectures: string[]): string[] {
  return [...new Set(architectures.map((architecture) => (architecture === 'arm64' ? QUANTIZED_ENGINES.aarch64 : 'default')))].sort();
}

/** The engine a function of this architecture runs the quantized model with, as named in the record. */
export function engineFor(record: Pick<QuantizationRecord, 'hostEngine'>, architecture: string): string {
  return architecture === 'arm64' ? QUANTIZED_ENGINES.aarch64 : record.hostEngine;
}

const ADVICE: Record<string, string> = {
  TORCH_SAMPLE_INPUT_INVALID:
    'Fix custom.torch.sampleInput: a JSON array the model takes as its one input (whole numbers give an int64 tensor, ' +
    'others float32), or an object {"inputs": [...]}.',
  TORCH_QUANTIZE_MODEL_INVALID: 'Quantizing loads the model as the function would: fix the model or its factory, or set quantize: false.',
  TORCH_QUANTIZE_NEEDS_MODULE: 'Save an nn.Module (or a state dict with a factory), or set quantize: false.',
  TORCH_QUANTIZE_FAILED: 'Set quantize: false to ship the float model, and run with --verbose for details.',
};

/** Refuses, before any long work, a model that has no module to quantize. */
export function checkQuantizable(model: ModelManifest): void {
  if (model.loader !== 'weights') return;
  throw new TorchError(
    'TORCH_QUANTIZE_NEEDS_MODULE',
    `custom.torch.quantize is "dynamic", but ${model.path} is loaded as plain weights (no factory), so there is no ` +
      'module to quantize. Set model.factory to the function that builds the module (loader: state_dict), ' +
      'or save a TorchScript model.',
  );
}

/** Loaders whose file quantize.py reads and writes back in the same form. */
const QUANTIZABLE: ModelManifest['loader'][] = ['torchscript', 'state_dict', 'pickle'];

/** Why `quantize: dynamic` leaves this model float, or null when it quantizes it. */
export function notQuantizedBecause(model: ModelManifest): string | null {
  if (QUANTIZABLE.includes(model.loader)) return null;
  return (
    `quantize: dynamic leaves ${model.path} float: the ${model.loader} loader's files are not rewritten at package time. ` +
    'Quantize the model before saving it, or save it as a state dict with a factory or as TorchScript.'
  );
}

/**
 * Dynamic int8 quantization of the model with the torch version the functions run, on the build
 * machine. The result (the packaged file and what was measured) is cached by everything that
 * changes it, so packaging an unchanged model again runs nothing.
 */
export async function quantizeModel(options: {
  config: ResolvedConfig;
  model: ModelManifest;
  /** The model file on the build machine. */
  sourcePath: string;
  torchVersion: string;
  /** Architectures of the functions that ship the model. */
  architectures: string[];
  cache: CacheLayout;
  runner: Runner;
  reporter: Reporter;
}): Promise<{ packaged: PackagedModel; report: QuantizationReport }> {
  const { config, model, torchVersion, cache, runner, reporter } = options;
  checkQuantizable(model);
  const sampleInput = config.sampleInput;
  const shownSample = sampleInput ? path.relative(config.serviceDir, sampleInput).split(path.sep).join('/') : null;
  const engines = enginesFor(options.architectures);
  const key = cacheKey({
    plugin: PLUGIN_VERSION,
    script: await sha256File(QUANTIZE_SCRIPT),
    model: model.sha256,
    loader: model.loader,
    factory: model.factory,
    // Only a factory runs the service's code while quantizing.
    serviceSources: model.factory ? await serviceSourcesDigest(config.serviceDir) : null,
    torch: torchVersion,
    dtype: QUANTIZED_DTYPE,
    modules: QUANTIZED_MODULES,
    sample: sampleInput ? await sha256File(sampleInput) : null,
    engines,
  });
  const { record, entryDir, reused } = await memo<QuantizationRecord>({
    cache,
    kind: 'models',
    key,
    recordFile: RECORD_FILE,
    build: async (stageDir, workDir) => {
      const host = await ensureHostTorch({ config, torchVersion, cache, runner, reporter });
      return runQuantization({ config, model, sourcePath: options.sourcePath, host, engines, sampleInput, shownSample, stageDir, workDir, runner, reporter });
    },
  });
  if (reused) reporter.verbose(`Quantized model: cached result ${key} (${entryDir}), quantization skipped`);

  const report: QuantizationReport = { ...record, sampleInput: shownSample, reused };
  if (!record.quantized) {
    reporter.notice(
      `quantize: dynamic gains nothing for ${model.path}: it has no ${QUANTIZED_MODULES.join(', ')} layers ` +
        '(dynamic quantization leaves convolutions and other layers float). The float model ships; set quantize: false to skip this step.',
    );
    return { packaged: { manifest: model, source: options.sourcePath }, report };
  }
  for (const note of record.notes) reporter.notice(`quantize: dynamic: ${note}.`);
  return { packaged: await packagedQuantized(model, record, path.join(entryDir, MODEL_FILE)), report };
}

/** The quantized file as the function ships it, at the user's model path. */
async function packagedQuantized(model: ModelManifest, record: QuantizationRecord, source: string): Promise<PackagedModel> {
  const manifest: ModelManifest = {
    id: model.id,
    kind: 'file',
    path: model.path,
    loader: record.loader,
    factory: record.loader === 'state_dict' ? model.factory : null,
    sha256: await sha256File(source),
    bytes: record.bytes,
    quantized: { dtype: QUANTIZED_DTYPE, modules: [...QUANTIZED_MODULES], engines: { ...QUANTIZED_ENGINES } },
  };
  return { manifest, source };
}

/** Runs python/build/quantize.py with the host torch; the packaged file goes into `stageDir`. */
async function runQuantization(options: {
  config: ResolvedConfig;
  model: ModelManifest;
  sourcePath: string;
  host: HostTorch;
  engines: string[];
  sampleInput: string | null;
  shownSample: string | null;
  stageDir: string;
  workDir: string;
  runner: Runner;
  reporter: Reporter;
}): Promise<QuantizationRecord> {
  const { config, model, host, stageDir, workDir, runner, reporter } = options;
  const started = Date.now();
  const request = {
    // The service first, as the task root comes first on Lambda; the factory's module is there.
    sysPath: [config.serviceDir, ...(host.sitePath ? [host.sitePath] : [])],
    cwd: config.serviceDir,
    model: { path: options.sourcePath, packagePath: model.path, loader: model.loader, factory: model.factory },
    dtype: QUANTIZED_DTYPE,
    modules: QUANTIZED_MODULES,
    output: path.join(stageDir, MODEL_FILE),
    sample: options.sampleInput,
    sampleShown: options.shownSample,
    engines: options.engines,
  };
  const requestFile = path.join(workDir, 'request.json');
  const resultFile = path.join(workDir, 'result.json');
  fs.writeFileSync(requestFile, JSON.stringify(request));
  reporter.progress(`Quantizing ${model.path} (dynamic int8, torch ${host.torchVersion})`);
  const run = await runner(host.python, [...hostPythonArgs(host), QUANTIZE_SCRIPT, requestFile, resultFile], {
    cwd: config.serviceDir,
    onLine: (line) => reporter.verbose(`quantize: ${line}`),
  });
  let result: (QuantizationRecord & { ok: true }) | { ok: false; code: string; message: string; traceback?: string } | null = null;
  try {
    result = JSON.parse(fs.readFileSync(resultFile, 'utf8'));
  } catch {
    result = null;
  }
  if (!result) {
    throw new TorchError(
      'TORCH_QUANTIZE_FAILED',
      `Quantizing ${model.path} with ${host.python} stopped (exit ${run.code}) before it finished: ${lastLines(run.stderr, 4)}. ` +
        'Set quantize: false to ship the float model.',
    );
  }
  if (!result.ok) {
    if (result.traceback) reporter.verbose(`quantize: ${result.traceback}`);
    const advice = ADVICE[result.code] ?? '';
    throw new TorchError(result.code, `quantize: dynamic: ${result.message}.${advice ? ` ${advice}` : ''}`);
  }
  const { ok: _ok, ...record } = result;
  reporter.verbose(
    `Quantized ${model.path} in ${formatSeconds(Date.now() - started)}: ${formatBytes(record.floatBytes)} → ${formatBytes(record.bytes)}, ` +
      `layers ${JSON.stringify(record.layers)}, packaged with the ${record.loader} loader`,
  );
  return record;
}
