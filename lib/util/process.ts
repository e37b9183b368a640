import { spawn } from 'node:child_process';

export interface RunOptions {
  cwd?: string;
  env?: NodeJS.ProcessEnv;
  /** Called with each line the process prints (stdout and stderr), for progress and --verbose. */
  onLine?: (line: string) => void;
}

export interface RunResult {
  code: number;
  stdout: string;
  stderr: string;
}

/** Stages that run processes take a Runner, so tests can hand a real one or a recording one. */
export type Runner = (command: string, args: string[], options?: RunOptions) => Promise<RunResult>;

/** Runs a process to completion; a missing executable rejects with ENOENT as `code`. */
export const runProcess: Runner = (command, args, options = {}) =>
  new Promise((resolve, reject) => {
    const child = spawn(command, args, {
      cwd: options.cwd,
      env: options.env ?? process.env,
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    const stdout: Buffer[] = [];
    const stderr: Buffer[] = [];
    const lineBuffers = { out: '', err: '' };
    const feed = (which: 'out' | 'err', chunk: Buffer) => {
      if (!options.onLine) return;
      lineBuffers[which] += chunk.toString('utf8');
      const lines = lineBuffers[which].split('\n');
      lineBuffers[which] = lines.pop() ?? '';
      for (const line of lines) if (line.trim()) options.onLine(line);
    };
    child.stdout.on('data', (chunk: Buffer) => {
      stdout.push(chunk);
      feed('out', chunk);
    });
    child.stderr.on('data', (chunk: Buffer) => {
      stderr.push(chunk);
      feed('err', chunk);
    });
    child.on('error', reject);
    child.on('close', (code, signal) => {
      if (options.onLine) {
        for (const rest of [lineBuffers.out, lineBuffers.err]) if (rest.trim()) options.onLine(rest);
      }
      resolve({
        code: code ?? (signal ? 128 : 1),
        stdout: Buffer.concat(stdout).toString('utf8'),
        stderr: Buffer.concat(stderr).toString('utf8'),
      });
    });
  });
