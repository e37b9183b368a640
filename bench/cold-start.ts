// Cold start from sandbox start to first prediction, for a packaged service, side by side with
// the baseline (serverless-python-requirements `zip: true` + `slim: true`, built from the same
// wheels) and the floor (the same torch tree unpacked in /opt with bytecode, nothing to unpack).
//
//   npm run build && node dist/bench/cold-start.js --runs 5            packages example-service itself
//   node dist/bench/cold-start.js --service DIR [--function predict]   a service already packaged
//
// Options: --runs N (default 5), --memory MB (default: the function's memorySize),
// --variants ours,baseline,floor, --keep (leave the layouts), --json FILE (raw figures),
// --model-check (check the model's sha256 as invoke local does; Lambda itself does not, see
// python/runtime/serverless_torch/shim.py verifies_model).
// Every variant runs on as many cores as the memory buys vCPUs (round(memory / 1769), at most the
// cores here: 1 at 2048 MB, 2 at 3008 MB), pinned with sched_setaffinity, so that no variant
// uses a core its Lambda would not have; Lambda's runtime API variable is set, as in a sandbox.
// Each run is a fresh `python3.X -I -S -B` (-B: as root the read-only bits do not stop Python
// writing __pycache__ into /opt, and Lambda's read-only /opt never gets any). The three variants
// are interleaved, in rotating order, after one untimed warm-up each: the machine is shared and
// noisy, so only ratios of medians measured in one run mean anything. The page cache stays warm
// (dropping it needs privileges this machine does not give), which favours reading big archives.
import { spawn } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { cacheKey } from '../lib/util/cache';
import { formatBytes } from '../lib/util/format';
import { Interpreter, findInterpreter } from '../lib/resolve/interpreter';
import { runProcess } from '../lib/util/process';
import { targetPlatform } from '../lib/resolve/target';
import { writeZip } from '../lib/zip/write';
import { extractZip, readZipEntry } from '../lib/zip/read';
import { pipEnv, prepareFixtureWheels, startWheelIndex } from '../test/support/wheel-index';

const REPO = path.resolve(__dirname, '..', '..');
const DRIVER = path.join(REPO, 'bench', 'cold_start.py');
const UNZIP_REQUIREMENTS = path.join(REPO, 'bench', 'unzip_requirements.py');
const SERVERLESS = path.join(REPO, 'node_modules', 'serverless', 'bin', 'serverless.js');
const BENCH_CACHE = path.join(process.env.XDG_CACHE_HOME || path.join(os.homedir(), '.cache'), 'serverless-torch-bench');
const PHASES = ['unpack', 'import', 'load', 'inference'] as const;
type Variant = 'ours' | 'baseline' | 'floor';

interface Options {
  runs: number;
  service: string | null;
  functionName: string;
  memory: number | null;
  variants: Variant[];
  keep: boolean;
  json: string | null;
  modelCheck: boolean;
}

interface Sample {
  phases: Record<(typeof PHASES)[number], number>;
  total: number;
  startup: number;
  peakRss: number;
  tmpBytes: number;
  modules: number;
}

interface Layout {
  variant: Variant;
  root: string;
  taskRoot: string;
  optDir: string;
  tmpDir: string;
  env: Record<string, string>;
}

function parseArgs(argv: string[]): Options {
  const options: Options = { runs: 5, service: null, functionName: 'predict', memory: null, variants: ['ours', 'baseline', 'floor'], keep: false, json: null, modelCheck: false };
  for (let i = 0; i < argv.length; i++) {
    const value = () => {
      if (i + 1 >= argv.length) throw new Error(`${argv[i]} needs a value`);
      return argv[++i];
    };
    switch (argv[i]) {
      case '--runs': options.runs = Number(value()); break;
      case '--service': options.service = path.resolve(value()); break;
      case '--function': options.functionName = value(); break;
      case '--memory': options.memory = Number(value()); break;
      case '--variants': options.variants = value().split(',') as Variant[]; break;
      case '--keep': options.keep = true; break;
      case '--json': options.json = path.resolve(value()); break;
      case '--model-check': options.modelCheck = true; break;
      default: throw new Error(`unknown argument ${argv[i]} (see the header of bench/cold-start.ts)`);
    }
  }
  if (!Number.isInteger(options.runs) || options.runs < 1) throw new Error('--runs must be a positive integer');
  return options;
}

function log(message: string): void {
  process.stderr.write(`[cold-start] ${message}\n`);
}

async function run(command: string, args: string[], options: { cwd?: string; env?: NodeJS.ProcessEnv } = {}): Promise<string> {
  const result = await runProcess(command, args, options);
  if (result.code !== 0) throw new Error(`${command} ${args.join(' ')} failed (exit ${result.code}):\n${(result.stdout + result.stderr).slice(-4000)}`);
  return result.stdout;
}

/** Packages a copy of example-service against the local wheel index, as scripts/run-example.js does offline. */
async function packageExample(workDir: string): Promise<{ service: string; requirements: string; indexes: { simple: string; torch: string }; close: () => Promise<void> }> {
  const wheels = await prepareFixtureWheels();
  const index = await startWheelIndex({ torchWheels: [wheels.torchWheelRetagged], otherWheels: wheels.dependencyWheels });
  const service = path.join(workDir, 'example-service');
  fs.cpSync(path.join(REPO, 'example-service'), service, {
    recursive: true,
    filter: (src) => !/^(node_modules|\.serverless|__pycache__)$/.test(path.basename(src)),
  });
  fs.mkdirSync(path.join(service, 'node_modules'));
  fs.symlinkSync(REPO, path.join(service, 'node_modules', 'serverless-torch'), 'dir');
  const yaml = require(require.resolve('js-yaml', { paths: [path.dirname(require.resolve(SERVERLESS))] }));
  const file = path.join(service, 'serverless.yml');
  const doc = yaml.load(fs.readFileSync(file, 'utf8'));
  // The wheel store holds only a CPython 3.11 torch (see scripts/run-example.js).
  doc.provider.runtime = 'python3.11';
  doc.custom.torch = { ...doc.custom.torch, torchIndexUrl: index.torchUrl, indexUrl: index.simpleUrl };
  fs.writeFileSync(file, yaml.dump(doc, { lineWidth: -1, noRefs: true }));
  log(`packaging example-service (torch from the local index ${index.torchUrl})`);
  const started = Date.now();
  await run(process.execPath, [SERVERLESS, 'package', '--verbose'], {
    cwd: service,
    env: {
      ...pipEnv(),
      // `package` asks AWS about the stack; the tests' stub answers instead, as there are no credentials here.
      NODE_OPTIONS: `--require ${path.join(REPO, 'dist', 'test', 'support', 'aws-stub.js')}`,
      SERVERLESS_TORCH_AWS_CLI: 'serverless',
      SLS_TELEMETRY_DISABLED: '1',
      SLS_NOTIFICATIONS_MODE: 'off',
      AWS_REGION: 'us-east-1',
    },
  }).catch(async (error) => {
    await index.close();
    throw error;
  });
  log(`packaged in ${((Date.now() - started) / 1000).toFixed(1)} s`);
  return {
    service,
    requirements: fs.readFileSync(path.join(service, 'requirements.txt'), 'utf8'),
    indexes: { simple: index.simpleUrl, torch: index.torchUrl },
    close: () => index.close(),
  };
}

interface PackagedFunction {
  runtime: string;
  architecture: string;
  memorySize: number;
  handler: string;
  environment: Record<string, string>;
  functionZip: string;
  layerZips: string[];
}

/** The function's zip and its layers in attachment order, from what `sls package` left in .serverless/. */
function readPackaged(service: string, functionName: string): PackagedFunction {
  const dir = path.join(service, '.serverless');
  const state = JSON.parse(fs.readFileSync(path.join(dir, 'serverless-state.json'), 'utf8'));
  const template = JSON.parse(fs.readFileSync(path.join(dir, 'cloudformation-template-update-stack.json'), 'utf8'));
  const fn = state.service.functions[functionName];
  if (!fn) throw new Error(`${service} has no function "${functionName}" (--function)`);
  const resource = Object.values<any>(template.Resources).find(
    (r) => r.Type === 'AWS::Lambda::Function' && r.Properties.FunctionName === fn.name,
  );
  const layers = state.service.layers ?? {};
  const layerZips = (resource?.Properties.Layers ?? []).map((ref: { Ref?: string }) => {
    const key = Object.keys(layers).find((name) => `${name.charAt(0).toUpperCase()}${name.slice(1)}LambdaLayer` === ref.Ref);
    if (!key) throw new Error(`layer ${JSON.stringify(ref)} of ${functionName} is not one this service packaged`);
    return path.resolve(service, layers[key].package.artifact);
  });
  const provider = state.service.provider;
  return {
    runtime: fn.runtime ?? provider.runtime,
    architecture: fn.architecture ?? provider.architecture ?? 'x86_64',
    memorySize: Number(fn.memorySize ?? provider.memorySize ?? 1024),
    handler: fn.environment?.SERVERLESS_TORCH_HANDLER ?? fn.handler,
    // SERVERLESS_TORCH_HANDLER and SERVERLESS_TORCH_MODEL (which of the manifest's models is this function's).
    environment: { ...(provider.environment ?? {}), ...(fn.environment ?? {}) },
    functionZip: path.resolve(service, fn.package.artifact),
    layerZips,
  };
}

function newLayout(root: string, variant: Variant): Layout {
  const base = path.join(root, variant);
  const layout = { variant, root: base, taskRoot: path.join(base, 'var', 'task'), optDir: path.join(base, 'opt'), tmpDir: path.join(base, 'tmp'), env: {} };
  for (const dir of [layout.taskRoot, layout.optDir, layout.tmpDir]) fs.mkdirSync(dir, { recursive: true });
  return layout;
}

async function compileBytecode(interpreter: Interpreter, dir: string): Promise<void> {
  // Exit 1 when some file is not valid for this Python (torch ships 3.12-only test helpers):
  // those simply stay without bytecode, as they would in the plugin's tree.
  const result = await runProcess(interpreter.path, ['-I', '-m', 'compileall', '-q', '-j', '0', '--invalidation-mode', 'unchecked-hash', dir]);
  if (result.code > 1) throw new Error(`compileall failed (exit ${result.code}):\n${result.stdout.slice(-2000)}`);
}

/** The site-packages serverless-python-requirements would zip: pip install -t, then `slim`. */
async function baselineRequirementsZip(options: {
  interpreter: Interpreter;
  requirements: string;
  indexes: { simple: string; torch: string };
}): Promise<string> {
  const key = cacheKey({ requirements: options.requirements, indexes: 'fixture', python: options.interpreter.version, format: 2 });
  const entry = path.join(BENCH_CACHE, `baseline-${key}`);
  const zipPath = path.join(entry, '.requirements.zip');
  if (fs.existsSync(zipPath)) return zipPath;
  const work = fs.mkdtempSync(path.join(BENCH_CACHE, 'work-'));
  try {
    const site = path.join(work, 'site');
    fs.writeFileSync(path.join(work, 'requirements.txt'), options.requirements);
    log('baseline: pip install -t of the same requirements from the same wheels');
    await run(options.interpreter.path, [
      '-m', 'pip', 'install', '--no-compile', '--target', site, '--index-url', options.indexes.simple,
      '--extra-index-url', options.indexes.torch, '-r', path.join(work, 'requirements.txt'),
    ], { env: pipEnv() });
    log('baseline: slim (no bytecode, no dist-info, no tests, strip every .so)');
    await run(options.interpreter.path, ['-I', DRIVER, 'slim', site]);
    await run('find', [site, '-name', '*.so', '-exec', 'strip', '{}', ';']);
    const files: string[] = [];
    const walk = (dir: string, prefix: string) => {
      for (const dirent of fs.readdirSync(dir, { withFileTypes: true })) {
        const rel = prefix ? `${prefix}/${dirent.name}` : dirent.name;
        if (dirent.isDirectory()) walk(path.join(dir, dirent.name), rel);
        else if (dirent.isFile()) files.push(rel);
      }
    };
    walk(site, '');
    log(`baseline: zipping ${files.length} files at deflate level 9, as the peer does`);
    fs.mkdirSync(path.join(work, 'entry'));
    await writeZip(path.join(work, 'entry', '.requirements.zip'), files.sort().map((name) => ({ name, source: { path: path.join(site, name) } })), { level: 9 });
    fs.mkdirSync(BENCH_CACHE, { recursive: true });
    fs.renameSync(path.join(work, 'entry'), entry);
    return zipPath;
  } finally {
    fs.rmSync(work, { recursive: true, force: true });
  }
}

function treeBytes(dir: string): number {
  let total = 0;
  const walk = (current: string) => {
    for (const dirent of fs.readdirSync(current, { withFileTypes: true })) {
      const full = path.join(current, dirent.name);
      if (dirent.isDirectory()) walk(full);
      else if (dirent.isFile()) total += fs.statSync(full).size;
    }
  };
  if (fs.existsSync(dir)) walk(dir);
  return total;
}

function countBytecodeDirs(dir: string): number {
  let count = 0;
  const walk = (current: string) => {
    for (const dirent of fs.readdirSync(current, { withFileTypes: true })) {
      if (!dirent.isDirectory()) continue;
      if (dirent.name === '__pycache__') count++;
      else walk(path.join(current, dirent.name));
    }
  };
  walk(dir);
  return count;
}

async function coldStart(layout: Layout, interpreter: Interpreter, memory: number, event: string, options: { cpus: number; modelCheck: boolean }): Promise<Sample> {
  fs.rmSync(layout.tmpDir, { recursive: true, force: true });
  fs.mkdirSync(layout.tmpDir);
  const env: Record<string, string> = {
    PATH: '/usr/bin:/bin',
    LANG: 'C.UTF-8',
    TZ: ':UTC',
    LAMBDA_TASK_ROOT: layout.taskRoot,
    LD_LIBRARY_PATH: path.join(layout.optDir, 'lib'),
    AWS_LAMBDA_FUNCTION_MEMORY_SIZE: String(memory),
    AWS_LAMBDA_FUNCTION_NAME: 'bench',
    SERVERLESS_TORCH_OPT_DIR: layout.optDir,
    SERVERLESS_TORCH_TMP_DIR: layout.tmpDir,
    BENCH_EVENT: event,
    BENCH_CPUS: String(options.cpus),
    ...(options.modelCheck ? {} : { AWS_LAMBDA_RUNTIME_API: '127.0.0.1:9001' }),
    ...layout.env,
  };
  const spawned = Date.now() / 1000;
  const child = spawn(interpreter.path, ['-I', '-S', '-B', DRIVER, 'run', layout.variant], {
    cwd: layout.taskRoot,
    env,
    stdio: ['ignore', 'pipe', 'pipe', 'pipe'],
  });
  let out = '';
  let err = '';
  child.stdout!.on('data', (chunk) => (err += chunk));
  child.stderr!.on('data', (chunk) => (err += chunk));
  (child.stdio[3] as NodeJS.ReadableStream).on('data', (chunk) => (out += chunk));
  const code: number = await new Promise((resolve, reject) => {
    child.on('error', reject);
    child.on('close', (exit) => resolve(exit ?? 1));
  });
  if (code !== 0 || !out.trim()) throw new Error(`${layout.variant}: the cold start failed (exit ${code}):\n${err.slice(-4000)}`);
  const record = JSON.parse(out.trim().split('\n').pop()!);
  if (!record.dontWriteBytecode) throw new Error('the driver ran without -B');
  if (!Array.isArray(record.result?.predictions)) throw new Error(`${layout.variant}: no prediction in ${JSON.stringify(record.result)}`);
  return {
    phases: { unpack: record.phases.unpack ?? 0, import: record.phases.import, load: record.phases.load, inference: record.phases.inference },
    total: record.finished - spawned,
    startup: record.started - spawned,
    peakRss: record.peakRss,
    tmpBytes: treeBytes(layout.tmpDir),
    modules: record.modules,
  };
}

function median(values: number[]): number {
  const sorted = [...values].sort((a, b) => a - b);
  const middle = Math.floor(sorted.length / 2);
  return sorted.length % 2 ? sorted[middle] : (sorted[middle - 1] + sorted[middle]) / 2;
}

function seconds(values: number[]): string {
  const spread = Math.max(...values) - Math.min(...values);
  return `${median(values).toFixed(2)} s ±${(spread / 2).toFixed(2)}`.padEnd(15);
}

async function main(): Promise<void> {
  const options = parseArgs(process.argv.slice(2));
  fs.mkdirSync(BENCH_CACHE, { recursive: true });
  const work = fs.mkdtempSync(path.join(os.tmpdir(), 'serverless-torch-cold-start-'));
  let closeIndex: (() => Promise<void>) | null = null;
  try {
    let service = options.service;
    let requirements: string;
    let indexes: { simple: string; torch: string } | null = null;
    if (!service) {
      const packaged = await packageExample(work);
      service = packaged.service;
      requirements = packaged.requirements;
      indexes = packaged.indexes;
      closeIndex = packaged.close;
    } else {
      requirements = fs.existsSync(path.join(service, 'requirements.txt')) ? fs.readFileSync(path.join(service, 'requirements.txt'), 'utf8') : 'torch\n';
    }
    const fn = readPackaged(service, options.functionName);
    const memory = options.memory ?? fn.memorySize;
    const interpreter = await findInterpreter(targetPlatform(fn.runtime, fn.architecture), runProcess);
    const manifest = JSON.parse(await readZipText(fn.functionZip, 'serverless_torch/manifest.json'));
    const model = manifest.models?.[fn.environment.SERVERLESS_TORCH_MODEL];
    const event = path.join(service, 'event.json');
    if (!fs.existsSync(event)) throw new Error(`${event} is missing: the bench sends the service's event.json`);

    const layouts: Layout[] = [];
    if (options.variants.includes('ours')) {
      const layout = newLayout(work, 'ours');
      await extractZip(fn.functionZip, layout.taskRoot);
      for (const zip of fn.layerZips) await extractZip(zip, layout.optDir);
      layout.env = { ...fn.environment, SERVERLESS_TORCH_HANDLER: fn.handler };
      layouts.push(layout);
    }
    if (options.variants.includes('floor')) {
      const layout = newLayout(work, 'floor');
      await extractZip(fn.functionZip, layout.taskRoot);
      for (const zip of fn.layerZips) await extractZip(zip, layout.optDir);
      if (fs.existsSync(path.join(layout.optDir, 'serverless-torch', 'deps.json'))) await run(interpreter.path, ['-I', DRIVER, 'floor', layout.optDir, layout.taskRoot]);
      await compileBytecode(interpreter, path.join(layout.optDir, 'python'));
      layout.env = { ...fn.environment, SERVERLESS_TORCH_HANDLER: fn.handler };
      layouts.push(layout);
    }
    if (options.variants.includes('baseline')) {
      if (!indexes) {
        const wheels = await prepareFixtureWheels();
        const index = await startWheelIndex({ torchWheels: [wheels.torchWheelRetagged], otherWheels: wheels.dependencyWheels });
        closeIndex = () => index.close();
        indexes = { simple: index.simpleUrl, torch: index.torchUrl };
      }
      const zip = await baselineRequirementsZip({ interpreter, requirements, indexes });
      const layout = newLayout(work, 'baseline');
      await extractZip(fn.functionZip, layout.taskRoot);
      fs.rmSync(path.join(layout.taskRoot, 'serverless_torch'), { recursive: true });
      fs.copyFileSync(zip, path.join(layout.taskRoot, '.requirements.zip'));
      fs.copyFileSync(UNZIP_REQUIREMENTS, path.join(layout.taskRoot, 'unzip_requirements.py'));
      if (!model?.factory) throw new Error('the baseline driver loads a state dict into the module the factory builds: this model has none');
      layout.env = { SERVERLESS_TORCH_HANDLER: fn.handler, BENCH_MODEL_PATH: model.path, BENCH_MODEL_FACTORY: model.factory };
      layouts.push(layout);
    }
    for (const layout of layouts) await run('chmod', ['-R', 'a-w', path.join(layout.root, 'var'), layout.optDir]);

    const threads = Math.min(Math.max(1, Math.round(memory / 1769)), os.availableParallelism());
    log(`${fn.runtime} ${fn.architecture}, ${interpreter.path}, memory ${memory} MB (${threads} vCPU-equivalents), ${os.availableParallelism()} cores here`);
    const samples = new Map<Variant, Sample[]>(layouts.map((layout) => [layout.variant, []]));
    const runOptions = { cpus: threads, modelCheck: options.modelCheck };
    for (const layout of layouts) await coldStart(layout, interpreter, memory, event, runOptions);
    for (let runIndex = 0; runIndex < options.runs; runIndex++) {
      // Rotating the order spreads the noise of the shared machine over every variant alike.
      const order = layouts.map((_, i) => layouts[(i + runIndex) % layouts.length]);
      for (const layout of order) {
        const sample = await coldStart(layout, interpreter, memory, event, runOptions);
        samples.get(layout.variant)!.push(sample);
        log(`run ${runIndex + 1}/${options.runs} ${layout.variant.padEnd(8)} total ${sample.total.toFixed(2)} s`);
      }
    }
    for (const layout of layouts) {
      const written = countBytecodeDirs(layout.root);
      if (written && layout.variant === 'baseline') throw new Error(`${layout.variant}: __pycache__ appeared in the read-only layout`);
    }
    report(samples, { runs: options.runs, memory, threads, runtime: `${fn.runtime} ${fn.architecture}`, layouts, fn });
    if (options.json) fs.writeFileSync(options.json, JSON.stringify(Object.fromEntries(samples), null, 1));
  } finally {
    if (closeIndex) await closeIndex();
    if (options.keep) {
      log(`layouts kept in ${work}`);
    } else {
      await run('chmod', ['-R', 'u+w', work]);
      fs.rmSync(work, { recursive: true, force: true });
    }
  }
}

async function readZipText(zipPath: string, member: string): Promise<string> {
  return (await readZipEntry(zipPath, member)).toString('utf8');
}

function report(
  samples: Map<Variant, Sample[]>,
  context: { runs: number; memory: number; threads: number; runtime: string; layouts: Layout[]; fn: PackagedFunction },
): void {
  const lines: string[] = [];
  lines.push(
    `Cold start to first prediction: ${context.runtime}, memory ${context.memory} MB (${context.threads} vCPUs), ` +
      `median ±half-range of ${context.runs} runs each, interleaved, warm page cache, ${os.availableParallelism()} cores`,
  );
  lines.push(`${'variant'.padEnd(9)}${'unpack'.padEnd(15)}${'import torch'.padEnd(15)}${'model load'.padEnd(15)}${'1st inference'.padEnd(15)}${'total'.padEnd(15)}${'peak RSS'.padEnd(12)}/tmp used   code+layers on disk`);
  for (const [variant, list] of samples) {
    const layout = context.layouts.find((l) => l.variant === variant)!;
    const onDisk = treeBytes(layout.taskRoot) + treeBytes(layout.optDir);
    lines.push(
      variant.padEnd(9) +
        PHASES.map((phase) => seconds(list.map((s) => s.phases[phase]))).join('') +
        seconds(list.map((s) => s.total)) +
        formatBytes(median(list.map((s) => s.peakRss))).padEnd(12) +
        formatBytes(median(list.map((s) => s.tmpBytes))).padEnd(12) +
        formatBytes(onDisk),
    );
  }
  const total = (variant: Variant) => (samples.has(variant) ? median(samples.get(variant)!.map((s) => s.total)) : NaN);
  if (samples.has('ours')) {
    const ratios: string[] = [];
    if (samples.has('baseline')) ratios.push(`ours/baseline ${(total('ours') / total('baseline')).toFixed(2)} (goal ≤ 0.30)`);
    if (samples.has('floor')) ratios.push(`ours/floor ${(total('ours') / total('floor')).toFixed(2)} (goal ≤ 1.25)`);
    if (ratios.length) lines.push(`total, ratio of medians: ${ratios.join(', ')}`);
  }
  const ours = context.layouts.find((layout) => layout.variant === 'ours');
  const depsJson = ours ? path.join(ours.optDir, 'serverless-torch', 'deps.json') : '';
  if (depsJson && fs.existsSync(depsJson)) {
    const deps = JSON.parse(fs.readFileSync(depsJson, 'utf8'));
    lines.push(`ours unpacks ${formatBytes(deps.unpackedBytes)} in ${deps.files.length} files from ${deps.frames.length} ${deps.codec} frames`);
  }
  lines.push('baseline = serverless-python-requirements zip + slim (one deflated zip, one thread, no .pyc); floor = the same tree as ours in /opt with .pyc, nothing to unpack');
  process.stdout.write(lines.join('\n') + '\n');
}

main().catch((error) => {
  process.stderr.write(`cold-start: ${error instanceof Error ? error.message : String(error)}\n`);
  process.exitCode = 1;
});
