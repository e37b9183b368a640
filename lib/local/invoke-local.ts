import * as path from 'node:path';
import { PackageOutput } from '../pipeline/types';
import { Interpreter } from '../resolve/interpreter';
import { openCache } from '../util/cache';
import { Reporter } from '../util/reporter';
import { runInvocations } from './invoke';
import { layOut } from './layout';

// What the shim may read from the caller's environment, as the Lambda runtime would set it.
const PASSED_THROUGH = ['AWS_REGION', 'AWS_DEFAULT_REGION', 'AWS_LAMBDA_LOG_GROUP_NAME', 'AWS_LAMBDA_LOG_STREAM_NAME', 'AWS_PROFILE', 'AWS_ACCESS_KEY_ID', 'AWS_SECRET_ACCESS_KEY', 'AWS_SESSION_TOKEN'];

/** The function's environment: provider values, then the function's own, then the caller's AWS settings. */
export function localEnvironment(sources: (Record<string, unknown> | undefined)[], callerEnv: NodeJS.ProcessEnv): Record<string, string> {
  const environment: Record<string, string> = {};
  for (const source of sources) {
    for (const [key, value] of Object.entries(source ?? {})) if (value !== undefined && value !== null) environment[key] = String(value);
  }
  for (const key of PASSED_THROUGH) if (callerEnv[key]) environment[key] = callerEnv[key]!;
  return environment;
}

/** What `invoke local` prints: the result, or the error as the Lambda runtime reports it. */
export interface LocalResult {
  text: string;
  failed: boolean;
}

/** Runs one event through the packaged function, laid out under `root` as Lambda lays it out. */
export async function invokePackaged(options: {
  output: PackageOutput;
  root: string;
  interpreter: Interpreter;
  cacheDir: string;
  event: unknown;
  environment: Record<string, string>;
  functionName: string;
  memorySize: number;
  timeout: number;
  reporter: Reporter;
}): Promise<LocalResult> {
  const { output, interpreter, reporter } = options;
  const packaged = output.functions[0];
  reporter.verbose(`invoke local: ${interpreter.path} (Python ${interpreter.version}, ${interpreter.machine}) on the packaged artifacts in ${options.root}`);
  const layerZips = packaged.layers.map((layerName) => output.layers.find((layer) => layer.name === layerName)!.artifact);
  const layout = await layOut({ root: path.join(options.root, 'lambda'), functionZip: packaged.artifact, layerZips, cache: openCache(options.cacheDir) });
  const started = Date.now();
  const { outcomes, exitCode } = await runInvocations({
    layout,
    interpreter,
    events: [options.event],
    environment: options.environment,
    functionName: options.functionName,
    memorySize: options.memorySize,
    timeout: options.timeout,
    handler: packaged.environment.SERVERLESS_TORCH_HANDLER,
  });
  reporter.verbose(`invoke local: ${((Date.now() - started) / 1000).toFixed(1)} s including cold start`);
  const outcome = outcomes[0];
  if (outcome && 'result' in outcome) return { text: JSON.stringify(outcome.result, null, 4), failed: false };
  const failure = outcome?.error ?? outcome?.initError ?? {
    errorType: 'Runtime.ExitError',
    errorMessage: `The Python process exited with status ${exitCode} before answering`,
  };
  return { text: JSON.stringify(failure, null, 4), failed: true };
}
