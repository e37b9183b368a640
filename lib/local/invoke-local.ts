import * as fs from 'node:fs';
import * as path from 'node:path';
import { MODEL_BUCKET_ENV } from '../bundle/function-package';
import { storedObjects } from '../deploy/upload-models';
import { PackageOutput } from '../pipeline/types';
import { Interpreter } from '../resolve/interpreter';
import { openCache } from '../util/cache';
import { Reporter } from '../util/reporter';
import { runInvocations } from './invoke';
import { LocalLayer, layOut } from './layout';
import { UserLayerSource } from '../bundle/user-layers';

// What the framework's invoke local sets for every runtime (region, log names, credentials,
// profile, IS_LOCAL), which the handler may read as on Lambda.
const FRAMEWORK_SET = ['IS_LOCAL', 'AWS_ENDPOINT_URL', 'AWS_ENDPOINT_URL_S3', 'AWS_REGION', 'AWS_DEFAULT_REGION', 'AWS_LAMBDA_LOG_GROUP_NAME', 'AWS_LAMBDA_LOG_STREAM_NAME', 'AWS_PROFILE', 'AWS_ACCESS_KEY_ID', 'AWS_SECRET_ACCESS_KEY', 'AWS_SESSION_TOKEN'];

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

/**
 * How a model that travels in S3 reaches the local run: by default the packaged object is put
 * where the shim's download leaves a verified file, so no AWS is needed; `fromS3` runs the real
 * download instead, against the bucket (and the endpoint AWS_ENDPOINT_URL_S3 / AWS_ENDPOINT_URL
 * names), with boto3 from `runtimeDir` as the Lambda runtime provides it.
 */
export type LocalModelSource = { fromS3: false } | { fromS3: true; bucket: string; runtimeDir: string };

/** Puts the function's stored model object into the layout's /tmp as a verified download (python/runtime/serverless_torch/fetch.py). */
function placeStoredModel(artifactsDir: string, key: string, tmpDir: string): void {
  const object = storedObjects(artifactsDir).find((candidate) => candidate.key === key)!;
  const directory = path.join(tmpDir, 'serverless-torch', 'models', object.sha256);
  const file = path.posix.basename(object.key);
  fs.mkdirSync(directory, { recursive: true });
  fs.symlinkSync(path.join(artifactsDir, object.file), path.join(directory, file));
  fs.writeFileSync(path.join(directory, `${file}.verified`), JSON.stringify({ sha256: object.sha256, size: object.size }));
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
  /** Where the packaged artifacts are (serverless-torch-models.json among them). */
  artifactsDir: string;
  model: LocalModelSource;
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
  const modelEnvironment: Record<string, string> = {};
  if (packaged.modelObject) {
    if (options.model.fromS3) {
      Object.assign(modelEnvironment, { [MODEL_BUCKET_ENV]: options.model.bucket, SERVERLESS_TORCH_RUNTIME_DIR: options.model.runtimeDir });
      reporter.notice(`invoke local: the model comes from s3://${options.model.bucket}/${packaged.modelObject.key}${process.env.AWS_ENDPOINT_URL_S3 || process.env.AWS_ENDPOINT_URL ? ` at ${process.env.AWS_ENDPOINT_URL_S3 || process.env.AWS_ENDPOINT_URL}` : ''}`);
    } else {
      placeStoredModel(options.artifactsDir, packaged.modelObject.key, layout.tmpDir);
      // Never asked: the object is in place, verified.
      modelEnvironment[MODEL_BUCKET_ENV] = 'local-model-file';
      reporter.verbose(`invoke local: the model stored for S3 is read from ${options.artifactsDir} (--torch-model-from-s3 downloads it instead)`);
    }
  }
  const started = Date.now();
  const { outcomes, exitCode } = await runInvocations({
    layout,
    interpreter,
    events: [options.event],
    context: options.context,
    environment: { ...options.environment, ...modelEnvironment },
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
