import * as fs from 'node:fs';
import * as path from 'node:path';
import { openCache } from '../../lib/util/cache';
import { Interpreter, findInterpreter } from '../../lib/resolve/interpreter';
import * as os from 'node:os';
import { InvokeOutcome, runInvocations } from '../../lib/local/invoke';
import { LambdaLayout, layOut } from '../../lib/local/layout';
import { runProcess } from '../../lib/util/process';
import { targetPlatform } from '../../lib/resolve/target';

export interface PackagedFunction {
  /** The function zip `sls package` left in .serverless/. */
  functionZip: string;
  /** Its layer zips, in the order the function lists them. */
  layerZips: string[];
  /** What the plugin set in the function's environment: the user's handler and the model's id. */
  environment: Record<string, string>;
}

/** What `sls package` made for one function, read from .serverless/serverless-state.json. */
export function packagedFunction(service: string, name: string): PackagedFunction {
  const state = JSON.parse(fs.readFileSync(path.join(service, '.serverless', 'serverless-state.json'), 'utf8'));
  const template = JSON.parse(fs.readFileSync(path.join(service, '.serverless', 'cloudformation-template-update-stack.json'), 'utf8'));
  const fn = state.service.functions[name];
  const layers: Record<string, { package: { artifact: string } }> = state.service.layers;
  // The template has the function's layers in order, as references to the layers' logical ids.
  const logicalId = `${name.charAt(0).toUpperCase()}${name.slice(1)}LambdaFunction`;
  const layerZips = (template.Resources[logicalId].Properties.Layers as { Ref?: string }[])
    .filter((layer) => layer.Ref)
    .map((layer) => {
      const key = Object.keys(layers).find((candidate) => `${candidate.charAt(0).toUpperCase()}${candidate.slice(1)}LambdaLayer` === layer.Ref)!;
      return path.resolve(service, layers[key].package.artifact);
    });
  const { SERVERLESS_TORCH_HANDLER, SERVERLESS_TORCH_MODEL } = fn.environment;
  return { functionZip: path.resolve(service, fn.package.artifact), layerZips, environment: { SERVERLESS_TORCH_HANDLER, ...(SERVERLESS_TORCH_MODEL ? { SERVERLESS_TORCH_MODEL } : {}) } };
}

/** The packaged function unzipped as Lambda would (/var/task, /opt, /tmp under `root`). */
export function layOutPackaged(packaged: PackagedFunction, root: string, cacheDir: string, functionZip = packaged.functionZip): Promise<LambdaLayout> {
  return layOut({ root, functionZip, layers: packaged.layerZips.map((zip) => ({ zip })), cache: openCache(cacheDir) });
}

export function python311(): Promise<Interpreter> {
  return findInterpreter(targetPlatform('python3.11', 'x86_64'), runProcess);
}

/**
 * Runs events through the example's predict function on a layout, as invoke local does, with
 * python3.11 and the example's memory; the function's own output is discarded.
 */
export async function invokeExample(
  layout: LambdaLayout,
  packagedEnvironment: Record<string, string>,
  events: unknown[],
  environment: Record<string, string> = {},
): Promise<{ outcomes: InvokeOutcome[]; exitCode: number }> {
  return runInvocations({
    layout,
    interpreter: await python311(),
    events,
    environment,
    functionName: 'predict',
    memorySize: 3008,
    timeout: 30,
    packagedEnvironment,
    stdout: fs.createWriteStream(os.devNull),
    stderr: fs.createWriteStream(os.devNull),
  });
}
