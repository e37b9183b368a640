/**
 * A real S3-protocol server for tests and benches: s3rver (npm), run in a child process on
 * 127.0.0.1 at a free port, with its own data directory and one bucket.
 *
 * In a child process so that a test can SIGKILL it in the middle of a download (a server that
 * dies, not one that says goodbye), and so that its file I/O does not share the test's event
 * loop. The child exits when its stdin closes, so a test run that dies takes its servers along.
 *
 * s3rver knows one account: access key S3RVER, secret S3RVER (it refuses any other key with
 * 403 InvalidAccessKeyId). It checks SigV2 signatures and accepts any well-formed SigV4
 * signature. It has no bucket policies and no abortMultipartUpload (405 MethodNotAllowed).
 *
 * The same file is the child's program:
 *   node dist/test/support/s3-server.js --data DIR --bucket NAME [--port N]
 * prints {"port": N, "pid": P} on its first line once it listens. Python tests start it so.
 */
import { ChildProcess, spawn } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import * as readline from 'node:readline';

export const S3RVER_ACCESS_KEY_ID = 'S3RVER';
export const S3RVER_SECRET_ACCESS_KEY = 'S3RVER';
export const S3RVER_REGION = 'us-east-1';

export interface S3ServerOptions {
  /** The bucket created at start. @default 'models' */
  bucket?: string;
  /** Data directory; reused as it is when given (a restart keeps the objects). @default a new temp directory, removed by close() */
  dataDir?: string;
  /** @default a free port */
  port?: number;
}

export interface S3Server {
  /** http://127.0.0.1:PORT */
  endpoint: string;
  port: number;
  /** The server process, for tests that kill it. */
  pid: number;
  bucket: string;
  dataDir: string;
  /** Environment for an SDK client of this server (endpoint, credentials, region). */
  env: Record<string, string>;
  /** Stops the server, waits for the process to exit and removes a data directory it made. */
  close(): Promise<void>;
  /** SIGKILL, as a server that crashes; waits for the exit; leaves the data directory. */
  kill(): Promise<void>;
}

/** The command line that starts one server (for the Python tests, which start their own). */
export function s3ServerCommand(): string[] {
  return [process.execPath, __filename];
}

export async function startS3Server(options: S3ServerOptions = {}): Promise<S3Server> {
  const bucket = options.bucket ?? 'models';
  const ownDir = options.dataDir === undefined;
  const dataDir = options.dataDir ?? fs.mkdtempSync(path.join(os.tmpdir(), 'serverless-torch-s3rver-'));
  const args = ['--data', dataDir, '--bucket', bucket, '--port', String(options.port ?? 0)];
  const child = spawn(process.execPath, [__filename, ...args], { stdio: ['pipe', 'pipe', 'pipe'] });
  let started: { port: number; pid: number };
  try {
    started = await firstLine(child);
  } catch (error) {
    child.kill('SIGKILL');
    if (ownDir) fs.rmSync(dataDir, { recursive: true, force: true });
    throw error;
  }
  const exited = new Promise<void>((resolve) => {
    if (child.exitCode !== null || child.signalCode !== null) resolve();
    else child.once('exit', () => resolve());
  });
  const endpoint = `http://127.0.0.1:${started.port}`;
  return {
    endpoint,
    port: started.port,
    pid: child.pid as number,
    bucket,
    dataDir,
    env: {
      AWS_ENDPOINT_URL_S3: endpoint,
      AWS_ACCESS_KEY_ID: S3RVER_ACCESS_KEY_ID,
      AWS_SECRET_ACCESS_KEY: S3RVER_SECRET_ACCESS_KEY,
      AWS_DEFAULT_REGION: S3RVER_REGION,
    },
    async close() {
      // Closing stdin is the child's signal to stop (SIGTERM does the same, for a stuck pipe).
      child.stdin?.end();
      const timer = setTimeout(() => child.kill('SIGKILL'), 5000);
      await exited;
      clearTimeout(timer);
      if (ownDir) fs.rmSync(dataDir, { recursive: true, force: true });
    },
    async kill() {
      child.kill('SIGKILL');
      await exited;
    },
  };
}

function firstLine(child: ChildProcess): Promise<{ port: number; pid: number }> {
  return new Promise((resolve, reject) => {
    let stderr = '';
    child.stderr?.setEncoding('utf8').on('data', (d: string) => (stderr += d));
    const lines = readline.createInterface({ input: child.stdout! });
    const timer = setTimeout(() => reject(new Error(`s3rver did not start within 30 s: ${stderr}`)), 30000);
    lines.once('line', (line) => {
      clearTimeout(timer);
      try {
        resolve(JSON.parse(line));
      } catch {
        reject(new Error(`s3rver printed ${JSON.stringify(line)} instead of its port: ${stderr}`));
      }
    });
    child.once('exit', (code, signal) => {
      clearTimeout(timer);
      reject(new Error(`s3rver exited (${code ?? signal}) before it listened: ${stderr}`));
    });
  });
}

function argument(argv: string[], name: string): string | undefined {
  const i = argv.indexOf(name);
  return i >= 0 ? argv[i + 1] : undefined;
}

/** The child: one s3rver on 127.0.0.1 until stdin closes or a signal comes. */
async function serve(argv: string[]): Promise<void> {
  // eslint-disable-next-line @typescript-eslint/no-require-imports
  const S3rver = require('s3rver');
  const directory = argument(argv, '--data');
  const bucket = argument(argv, '--bucket');
  if (!directory || !bucket) throw new Error('usage: s3-server.js --data DIR --bucket NAME [--port N]');
  const server = new S3rver({
    // Loopback only: s3rver's default address is 'localhost' and its default port a fixed 4568.
    address: '127.0.0.1',
    port: Number(argument(argv, '--port') ?? 0),
    silent: true,
    directory,
    // Path-style addressing only: no Host header names a bucket here.
    vhostBuckets: false,
    configureBuckets: [{ name: bucket, configs: [] }],
  });
  const address = await server.run();
  process.stdout.write(JSON.stringify({ port: address.port, pid: process.pid }) + '\n');
  const stop = () => process.exit(0);
  process.stdin.on('end', stop).on('close', stop).resume();
  process.on('SIGTERM', stop).on('SIGINT', stop);
}

if (require.main === module) {
  serve(process.argv.slice(2)).catch((error) => {
    process.stderr.write(`${error.stack ?? error}\n`);
    process.exit(1);
  });
}
