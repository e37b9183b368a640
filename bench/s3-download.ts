// Download throughput of fetch.py (python/runtime/serverless_torch/fetch.py) by part size and
// concurrency, against s3rver on 127.0.0.1, each as a ratio to one single-stream GET of the same
// object measured in the same run.
//
//   npm run build && node dist/bench/s3-download.js                 400 MiB, 3 runs, the full grid
//   node dist/bench/s3-download.js --mib 200 --runs 5 --parts 8,16 --concurrency 4,16
//
// Options: --mib N (object size, default 400), --runs N (default 3), --parts LIST (MiB, default
// 8,16,32,64), --concurrency LIST (default 1,2,4,8,16), --python CMD (default python3.11),
// --json FILE (every timing). Every variant is a fresh Python process (a cold start's), timed from
// the first request to the verified file (client creation is reported apart); the variants are
// interleaved in an order rotated each run after one untimed warm-up, and the table gives
// medians. Loopback has no network to wait for: on this machine the CPU (2 cores shared by the
// server, the client and other jobs) is the limit, so the ratios say what parallel parts cost
// or save in CPU, not what they gain on Lambda, where the network is the limit.
import { spawn } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { boto3Site } from '../test/support/boto3';
import { startS3Server } from '../test/support/s3-server';

const REPO = path.resolve(__dirname, '..', '..');
const DRIVER = path.join(REPO, 'bench', 's3_download.py');

interface Options {
  mib: number;
  runs: number;
  parts: number[];
  concurrency: number[];
  python: string;
  json: string | null;
}

interface Timing {
  variant: string;
  seconds: number;
  /** CPU time of the Python process (all its threads) for the download. */
  cpu_seconds: number;
  client_seconds: number;
  bytes: number;
}

function parseOptions(argv: string[]): Options {
  const options: Options = { mib: 400, runs: 3, parts: [8, 16, 32, 64], concurrency: [1, 2, 4, 8, 16], python: 'python3.11', json: null };
  for (let i = 0; i < argv.length; i += 2) {
    const value = argv[i + 1];
    const list = () => value.split(',').map(Number);
    switch (argv[i]) {
      case '--mib': options.mib = Number(value); break;
      case '--runs': options.runs = Number(value); break;
      case '--parts': options.parts = list(); break;
      case '--concurrency': options.concurrency = list(); break;
      case '--python': options.python = value; break;
      case '--json': options.json = value; break;
      default: throw new Error(`unknown option ${argv[i]} (see the comment at the top of bench/s3-download.ts)`);
    }
  }
  return options;
}

function python(options: Options, args: string[], env: NodeJS.ProcessEnv): Promise<string> {
  return new Promise((resolve, reject) => {
    const child = spawn(options.python, ['-I', DRIVER, ...args], { env, stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    let err = '';
    child.stdout.setEncoding('utf8').on('data', (d: string) => (out += d));
    child.stderr.setEncoding('utf8').on('data', (d: string) => (err += d));
    child.on('error', reject);
    child.on('close', (code) => (code === 0 ? resolve(out.trim().split('\n').pop() as string) : reject(new Error(`${args[0]} ${args[args.length - 1]} failed (${code}):\n${err}`))));
  });
}

function median(values: number[]): number {
  const sorted = [...values].sort((a, b) => a - b);
  const mid = Math.floor(sorted.length / 2);
  return sorted.length % 2 ? sorted[mid] : (sorted[mid - 1] + sorted[mid]) / 2;
}

/** Every variant once per run, in an order rotated each run, after one untimed warm-up each. */
async function measure(options: Options, variants: string[], spec: string, tmp: string, env: NodeJS.ProcessEnv): Promise<Timing[]> {
  const timings: Timing[] = [];
  for (const variant of variants) await python(options, ['run', spec, tmp, variant], env);
  for (let run = 0; run < options.runs; run++) {
    const shift = (run * Math.max(1, Math.floor(variants.length / options.runs))) % variants.length;
    for (const variant of [...variants.slice(shift), ...variants.slice(0, shift)]) {
      const timing = JSON.parse(await python(options, ['run', spec, tmp, variant], env)) as Timing;
      timings.push(timing);
      process.stderr.write(`run ${run + 1}/${options.runs} ${variant.padEnd(10)} ${(timing.bytes / timing.seconds / 2 ** 20).toFixed(0)} MiB/s\n`);
    }
  }
  return timings;
}

function table(options: Options, timings: Timing[], defaultCell: string): string {
  const seconds = (variant: string) => median(timings.filter((t) => t.variant === variant).map((t) => t.seconds));
  const rate = (variant: string) => options.mib / seconds(variant);
  const single = rate('single');
  const lines = [
    `${options.mib} MiB object, medians of ${options.runs} runs; each cell: MiB/s (ratio to one single-stream GET)`,
    `single-stream GET: ${single.toFixed(0)} MiB/s (${seconds('single').toFixed(2)} s)`,
    '',
    `${'part \\ streams'.padEnd(16)}${options.concurrency.map((c) => String(c).padEnd(14)).join('')}`,
  ];
  for (const part of options.parts) {
    const cells = options.concurrency.map((c) => `${rate(`${part}:${c}`).toFixed(0)} (${(rate(`${part}:${c}`) / single).toFixed(2)})`.padEnd(14));
    lines.push(`${`${part} MiB`.padEnd(16)}${cells.join('')}`);
  }
  const after = `${defaultCell}:after`;
  lines.push('', `hashing after the download instead of while it runs, at ${defaultCell.replace(':', ' MiB x ')}: ${rate(after).toFixed(0)} MiB/s (${(rate(after) / single).toFixed(2)}) vs ${rate(defaultCell).toFixed(0)} MiB/s (${(rate(defaultCell) / single).toFixed(2)})`);
  const clients = timings.map((t) => t.client_seconds);
  lines.push(`import botocore + create the client (fresh process): median ${median(clients).toFixed(2)} s`);
  const cpu = (variant: string) => (median(timings.filter((t) => t.variant === variant).map((t) => t.cpu_seconds)) / options.mib) * 1000;
  lines.push(
    `per MiB at ${defaultCell.replace(':', ' MiB x ')}: ${((seconds(defaultCell) / options.mib) * 1000).toFixed(1)} ms wall, ` +
      `${cpu(defaultCell).toFixed(1)} ms CPU in the client (single-stream GET: ${cpu('single').toFixed(1)} ms CPU)`,
  );
  return lines.join('\n');
}

async function main(): Promise<void> {
  const options = parseOptions(process.argv.slice(2));
  const boto3 = await boto3Site();
  const server = await startS3Server({ bucket: 'models' });
  const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'serverless-torch-bench-s3-'));
  try {
    const env = { PATH: process.env.PATH, HOME: process.env.HOME, LANG: 'C.UTF-8', SERVERLESS_TORCH_BOTO3: boto3, ...server.env, AWS_CONFIG_FILE: os.devNull, AWS_SHARED_CREDENTIALS_FILE: os.devNull };
    process.stderr.write(`putting ${options.mib} MiB of random bytes into s3rver at ${server.endpoint}\n`);
    const spec = await python(options, ['setup', String(options.mib)], env);
    const defaultCell = '16:16';
    const grid = options.parts.flatMap((part) => options.concurrency.map((c) => `${part}:${c}`));
    const variants = ['single', ...grid, ...(grid.includes(defaultCell) ? [] : [defaultCell]), `${defaultCell}:after`];
    const timings = await measure(options, variants, spec, tmp, env);
    if (options.json) fs.writeFileSync(options.json, JSON.stringify(timings, null, 2));
    process.stdout.write(`node dist/bench/s3-download.js ${process.argv.slice(2).join(' ')}\n${table(options, timings, defaultCell)}\n`);
  } finally {
    await server.close();
    fs.rmSync(tmp, { recursive: true, force: true });
  }
}

main().catch((error) => {
  process.stderr.write(`${error.stack ?? error}\n`);
  process.exit(1);
});
