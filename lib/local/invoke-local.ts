import * as path from 'node:path';
import { PackageOutput } from '../pipeline/types';
import { Interpreter } from '../resolve/interpreter';
import { openCache } from '../util/cache';
import { Reporter } from '../util/reporter';
import { runInvocations } from './invoke';
import { LocalLayer, layOut } from './layout';
import { UserLayerSource } from '../bundle/user-layers';

// What the framework's invoke local sets for every runtime (region, log names, credentials,
// profile, IS_LOCAL), which the handler may read as on Lambda.
const FRAMEWORK_SET = ['IS_LOCAL', 'AWS_REGION', 'AWS_DEFAULT_REGION', 'AWS_LAMBDA_LOG_GROUP_NAME', 'AWS_LAMBDA_LOG_STREAM_NAME', 'AWS_PROFILE', 'AWS_ACCESS_KEY_ID', 'AWS_SECRET_ACCESS_KEY', 'AWS_SESSION_TOKEN'];

/**
 * The function's environment as the framework's own `invoke local` gives it. By the time the
 * plugin runs, the framework has resolved the configured values (`Ref`, `Fn::ImportValue`) and
 * the `-e KEY=VALUE` options into the process environment: the configured names and the
 * options' names are read from there, never stringified from the configuration.
 */
export function localEnvironment(options: { configuredNames: string[]; optionEnv: unknown; processEnv: NodeJS.ProcessEnv }): Record<string, string> {
  const optionNames = ([] as unknown[]).concat(options.optionEnv ?? []).map((item) => String(item).split('=')[0]);
  const environment: Record<string, string> = {};
  for (const key of [...FRAMEWORK_SET, ...options.configuredNames, ...optionNames]) {
    const value = options.processEnv[key];
    if (value !== undefined) environment[key] = value;
  }
  return environment;
}

/** The event as the framework's invoke local passes it: what -d/-p/stdin gave, or {} when that is empty. */
export function localEvent(data: unknown): unknown {
  return data || {};
}

/** What `invoke local` prints: the result, or the error as the Lambda runtime reports it. */
export interface LocalResult {
  text: string;
  failed: boolean;
}

/** Runs one event through the packaged function, laid out under `root` as Lambda lays it out. */
export async function invokePackaged(options: {
  output: PackageOutput;
  /** The function's own layers, in the order it lists them (before the plugin's). */
  userLayers: UserLayerSource[];
  root: string;
  interpreter: Interpreter;
  cacheDir: string;
  event: unknown;
  /** Fields of the context object, from --context / --contextPath. */
  context: unknown;
  environment: Record<string, string>;
  functionName: string;
  memorySize: number;
  timeout: number;
  reporter: Reporter;
}): Promise<LocalResult> {
  const { output, interpreter, reporter } = options;
  const packaged = output.functions[0];
  reporter.verbose(`invoke local: ${interpreter.path} (Python ${interpreter.version}, ${interpreter.machine}) on the packaged artifacts in ${options.root}`);
  const remote = options.userLayers.filter((layer) => layer.kind === 'remote');
  if (remote.length) {
    reporter.warning(
      `invoke local cannot include ${remote.map((layer) => layer.label).join(', ')}: published elsewhere, not on this machine. ` +
        'What the handler imports from them fails here, and may work on Lambda.',
    );
  }
  const layers: LocalLayer[] = [
    ...options.userLayers.filter((layer) => layer.kind !== 'remote').map((layer) => (layer.kind === 'zip' ? { zip: layer.location! } : { dir: layer.location! })),
    ...packaged.layers.map((layerName) => ({ zip: output.layers.find((layer) => layer.name === layerName)!.artifact })),
  ];
  const layout = await layOut({ root: path.join(options.root, 'lambda'), functionZip: packaged.artifact, layers, cache: openCache(options.cacheDir) });
  const started = Date.now();
  const { outcomes, exitCode } = await runInvocations({
    layout,
    interpreter,
    events: [options.event],
    context: options.context,
    environment: options.environment,
    functionName: options.functionName,
    memorySize: options.memorySize,
    timeout: options.timeout,
    packagedEnvironment: packaged.environment,
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
