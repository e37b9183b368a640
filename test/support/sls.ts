import { execFileSync, spawn } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { pipEnv } from './wheel-index';

export const REPO = path.resolve(__dirname, '..', '..', '..');
export type Cli = 'serverless' | 'osls';
export const CLIS: Cli[] = ['serverless', 'osls'];

/** Shared by the tests of one run, so only the first packaging resolves and strips torch. */
export const TEST_CACHE = fs.mkdtempSync(path.join(os.tmpdir(), 'serverless-torch-test-cache-'));
process.on('exit', () => fs.rmSync(TEST_CACHE, { recursive: true, force: true }));

let installed: string | null = null;

/**
 * `npm pack`s the plugin and installs the tarball once, the way a user's project gets it;
 * each service links to that install.
 */
export function installedPlugin(): string {
  if (installed) return installed;
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'serverless-torch-install-'));
  process.on('exit', () => fs.rmSync(dir, { recursive: true, force: true }));
  const packOutput = execFileSync('npm', ['pack', '--ignore-scripts', '--json', '--pack-destination', dir], { cwd: REPO, encoding: 'utf8' });
  const tarball = path.join(dir, JSON.parse(packOutput)[0].filename);
  fs.writeFileSync(path.join(dir, 'package.json'), '{"name":"plugin-install","version":"1.0.0","private":true}');
  execFileSync('npm', ['install', '--no-audit', '--no-fund', '--prefer-offline', '--omit=dev', '--omit=peer', tarball], { cwd: dir, stdio: 'ignore' });
  installed = path.join(dir, 'node_modules', 'serverless-torch');
  return installed;
}

export interface ServiceOptions {
  /** Files to write (relative path → content); they override the copied example. */
  files?: Record<string, string | Buffer>;
  /** Copy the example service first. @default true */
  fromExample?: boolean;
}

/** A temporary service directory with the packed plugin installed. */
export function makeService(options: ServiceOptions = {}): string {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'serverless-torch-service-'));
  if (options.fromExample !== false) {
    fs.cpSync(path.join(REPO, 'example-service'), dir, { recursive: true, filter: (source) => !source.includes(`${path.sep}node_modules`) });
  }
  for (const [file, content] of Object.entries(options.files ?? {})) {
    fs.mkdirSync(path.dirname(path.join(dir, file)), { recursive: true });
    fs.writeFileSync(path.join(dir, file), content);
  }
  fs.mkdirSync(path.join(dir, 'node_modules'), { recursive: true });
  fs.symlinkSync(installedPlugin(), path.join(dir, 'node_modules', 'serverless-torch'));
  return dir;
}

export interface SlsResult {
  code: number;
  stdout: string;
  stderr: string;
  /** What the CLI asked of (stubbed) AWS, in order. */
  awsRequests: { service: string; method: string; params: any }[];
}

/** Runs the real CLI in a child process, with pip seeing only the indexes the service names. */
export function runSls(cli: Cli, args: string[], cwd: string, extraEnv: Record<string, string> = {}): Promise<SlsResult> {
  return startSls(cli, args, cwd, extraEnv).result;
}

export interface RunningSls {
  /** The CLI's process id, which is also its process group's: pip and strip run inside it. */
  pid: number;
  /** stdout and stderr so far, interleaved as they arrived. */
  output(): string;
  /** SIGKILL to the whole process group, as a closed terminal or an OOM kill would leave things. */
  killGroup(): void;
  result: Promise<SlsResult>;
}

/** Starts the real CLI as the leader of its own process group, for tests that interrupt it. */
export function startSls(cli: Cli, args: string[], cwd: string, extraEnv: Record<string, string> = {}): RunningSls {
  const bin = path.join(REPO, 'node_modules', cli, 'bin', 'serverless.js');
  const awsLog = path.join(fs.mkdtempSync(path.join(os.tmpdir(), 'aws-stub-')), 'requests.jsonl');
  const env = {
    ...pipEnv(),
    NODE_OPTIONS: `--require ${path.join(__dirname, 'aws-stub.js')}`,
    SERVERLESS_TORCH_AWS_CLI: cli,
    SERVERLESS_TORCH_AWS_LOG: awsLog,
    SLS_TELEMETRY_DISABLED: '1',
    SLS_TRACKING_DISABLED: '1',
    SLS_NOTIFICATIONS_MODE: 'off',
    SLS_DEPRECATION_DISABLE: '*',
    AWS_REGION: 'us-east-1',
    ...extraEnv,
  };
  const child = spawn(process.execPath, [bin, ...args], { cwd, env, stdio: ['ignore', 'pipe', 'pipe'], detached: true });
  const stdout: Buffer[] = [];
  const stderr: Buffer[] = [];
  let interleaved = '';
  child.stdout.on('data', (chunk) => {
    stdout.push(chunk);
    interleaved += chunk.toString('utf8');
  });
  child.stderr.on('data', (chunk) => {
    stderr.push(chunk);
    interleaved += chunk.toString('utf8');
  });
  const result = new Promise<SlsResult>((resolve, reject) => {
    child.on('error', reject);
    child.on('close', (code, signal) => {
      const awsRequests = fs.existsSync(awsLog)
        ? fs.readFileSync(awsLog, 'utf8').split('\n').filter(Boolean).map((line) => JSON.parse(line))
        : [];
      resolve({ code: code ?? (signal ? 128 : 1), stdout: Buffer.concat(stdout).toString('utf8'), stderr: Buffer.concat(stderr).toString('utf8'), awsRequests });
    });
  });
  return {
    pid: child.pid!,
    output: () => interleaved,
    killGroup: () => {
      try {
        process.kill(-child.pid!, 'SIGKILL');
      } catch {
        // the group has already exited
      }
    },
    result,
  };
}

/** serverless.yml for tests: the example's shape with the local indexes and the shared cache. */
export function serviceYaml(options: {
  /** osls 4 is the maintained v3 line under a new major version. @default '>=3' */
  frameworkVersion?: string;
  runtime?: string;
  architecture?: string;
  torchIndexUrl: string;
  indexUrl: string;
  model?: string;
  extraCustom?: string;
  functions?: string;
  provider?: string;
  packageSection?: string;
}): string {
  return [
    'service: digits',
    `frameworkVersion: '${options.frameworkVersion ?? '>=3'}'`,
    'plugins:',
    '  - serverless-torch',
    'provider:',
    '  name: aws',
    `  runtime: ${options.runtime ?? 'python3.11'}`,
    `  architecture: ${options.architecture ?? 'x86_64'}`,
    '  memorySize: 3008',
    '  timeout: 30',
    ...(options.provider ? [options.provider] : []),
    'custom:',
    '  torch:',
    `    model: ${options.model ?? '{ path: model/model.pt, loader: state_dict, factory: "net:build" }'}`,
    `    torchIndexUrl: ${options.torchIndexUrl}`,
    `    indexUrl: ${options.indexUrl}`,
    `    cacheDir: ${TEST_CACHE}`,
    ...(options.extraCustom ? [options.extraCustom] : []),
    options.packageSection ?? "package:\n  patterns:\n    - '!node_modules/**'\n    - '!data/**'\n    - '!train.py'\n    - '!package*.json'",
    'functions:',
    options.functions ?? '  predict:\n    handler: handler.predict\n  health:\n    handler: health.main\n    torch: false',
    '',
  ].join('\n');
}

/**
 * The example's own serverless.yml, changed only where this machine needs it: the local wheel
 * indexes, the shared test cache, and python3.11 (the local store has torch for CPython 3.11 only).
 */
export function exampleYaml(options: { torchIndexUrl: string; indexUrl: string }): string {
  const yaml = require(require.resolve('js-yaml', { paths: [path.join(REPO, 'node_modules', 'serverless')] }));
  const doc = yaml.load(fs.readFileSync(path.join(REPO, 'example-service', 'serverless.yml'), 'utf8'));
  doc.provider.runtime = 'python3.11';
  Object.assign(doc.custom.torch, { torchIndexUrl: options.torchIndexUrl, indexUrl: options.indexUrl, cacheDir: TEST_CACHE });
  return yaml.dump(doc, { lineWidth: -1, noRefs: true });
}

/**
 * Lists the members of a zip with Python's zipfile, independent of the plugin's reader; with
 * `nested`, also the members of zips stored inside it (the compressed dependency archive).
 */
export function zipMembers(zipPath: string, nested = false): string[] {
  const script = `import io, sys, zipfile
outer = zipfile.ZipFile(sys.argv[1])
for name in outer.namelist():
    print(name)
    if sys.argv[2] == "1" and name.endswith(".zip"):
        for inner in zipfile.ZipFile(io.BytesIO(outer.read(name))).namelist():
            print(inner)`;
  const out = execFileSync('python3', ['-c', script, zipPath, nested ? '1' : '0'], { encoding: 'utf8', maxBuffer: 64 * 1024 * 1024 });
  return out.split('\n').filter(Boolean);
}

/** The last JSON value a command printed on stdout (invoke local prints the result last). */
export function lastJson(stdout: string): unknown {
  const start = stdout.lastIndexOf('\n{') >= 0 ? stdout.lastIndexOf('\n{') + 1 : stdout.indexOf('{');
  return JSON.parse(stdout.slice(start));
}
