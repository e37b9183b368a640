import { spawn } from 'node:child_process';
import * as path from 'node:path';
import { Interpreter } from '../resolve/interpreter';
import { LOCAL_SCRIPTS_DIR } from '../util/plugin-paths';
import { LambdaLayout } from './layout';

export interface InvokeOutcome {
  result?: unknown;
  error?: { errorType: string; errorMessage: string; stackTrace?: string[] };
  initError?: { errorType: string; errorMessage: string; stackTrace?: string[] };
  /** Resident memory of the Python process after this invocation, in bytes (SERVERLESS_TORCH_REPORT_RSS=1). */
  rss?: number;
}

/** Runs the packaged shim on the layout with a host interpreter, one JSON event per line. */
export async function runInvocations(options: {
  layout: LambdaLayout;
  interpreter: Interpreter;
  events: unknown[];
  /** Fields set on the context object, as --context gives them to the framework's invoke local. @default none */
  context?: unknown;
  environment: Record<string, string>;
  functionName: string;
  memorySize: number;
  timeout: number;
  /** What the plugin set in the function's environment (SERVERLESS_TORCH_HANDLER, SERVERLESS_TORCH_MODEL). */
  packagedEnvironment: Record<string, string>;
  stdout?: NodeJS.WritableStream;
  stderr?: NodeJS.WritableStream;
}): Promise<{ outcomes: InvokeOutcome[]; exitCode: number }> {
  const { layout } = options;
  const env: Record<string, string> = {
    PATH: process.env.PATH ?? '/usr/bin:/bin',
    HOME: process.env.HOME ?? '/tmp',
    LANG: 'C.UTF-8',
    TZ: ':UTC',
    ...options.environment,
    LAMBDA_TASK_ROOT: layout.taskRoot,
    LD_LIBRARY_PATH: path.join(layout.optDir, 'lib'),
    AWS_LAMBDA_FUNCTION_NAME: options.functionName,
    AWS_LAMBDA_FUNCTION_MEMORY_SIZE: String(options.memorySize),
    AWS_LAMBDA_FUNCTION_TIMEOUT: String(options.timeout),
    AWS_LAMBDA_FUNCTION_VERSION: '$LATEST',
    SERVERLESS_TORCH_OPT_DIR: layout.optDir,
    SERVERLESS_TORCH_TMP_DIR: layout.tmpDir,
    ...options.packagedEnvironment,
    SERVERLESS_TORCH_RESULT_FD: '3',
    ...(options.context && typeof options.context === 'object' ? { SERVERLESS_TORCH_CONTEXT: JSON.stringify(options.context) } : {}),
  };
  const runnerScript = path.join(LOCAL_SCRIPTS_DIR, 'invoke_local.py');
  // -I -S: no host site-packages, no PYTHON* variables, no user site: only what was packaged.
  // -B: /var/task and /opt are read-only on Lambda; here the layout's layers live in the plugin
  // cache, and bytecode written into them would make later local runs faster than Lambda's.
  const child = spawn(options.interpreter.path, ['-I', '-S', '-B', runnerScript], {
    cwd: layout.taskRoot,
    env,
    stdio: ['pipe', 'pipe', 'pipe', 'pipe'],
  });
  child.stdout!.pipe(options.stdout ?? process.stderr, { end: false });
  child.stderr!.pipe(options.stderr ?? process.stderr, { end: false });
  const results: string[] = [];
  let buffered = '';
  (child.stdio[3] as NodeJS.ReadableStream).on('data', (chunk: Buffer) => {
    buffered += chunk.toString('utf8');
    const lines = buffered.split('\n');
    buffered = lines.pop() ?? '';
    results.push(...lines.filter(Boolean));
  });
  child.stdin!.end(options.events.map((event) => JSON.stringify(event)).join('\n') + '\n');
  const exitCode: number = await new Promise((resolve, reject) => {
    child.on('error', reject);
    child.on('close', (code) => resolve(code ?? 1));
  });
  if (buffered.trim()) results.push(buffered);
  return { outcomes: results.map((line) => JSON.parse(line) as InvokeOutcome), exitCode };
}
