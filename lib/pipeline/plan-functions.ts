import { FunctionContents, collectFunctionContents } from '../bundle/function-package';
import { UNZIPPED_LIMIT, checkLayerCount } from '../bundle/limits';
import { ResolvedConfig } from '../config/options';
import { PackagedModel } from '../model/quantize';
import { TargetPlatform, targetId, targetPlatform } from '../resolve/target';
import { TorchError } from '../util/errors';
import { Reporter } from '../util/reporter';
import { TorchFunction } from './types';

export interface PlannedFunction {
  fn: TorchFunction;
  target: TargetPlatform;
}

/** Which targets the service builds for, and what goes into each function zip. */
export interface FunctionPlan {
  functions: PlannedFunction[];
  /** Targets by targetId, in the order their first function appears. */
  targets: Map<string, TargetPlatform>;
  /** Function zip contents by artifact name: functions packaged together share one. */
  contents: Map<string, FunctionContents>;
}

/** Collects each artifact's contents; every function packaged into `artifactName` shares them. */
export function collectArtifacts(options: {
  config: ResolvedConfig;
  functions: TorchFunction[];
  model: PackagedModel;
  reporter: Reporter;
}): Map<string, FunctionContents> {
  const { config, functions, model, reporter } = options;
  const contents = new Map<string, FunctionContents>();
  for (const fn of functions) {
    if (contents.has(fn.artifactName)) continue;
    contents.set(
      fn.artifactName,
      collectFunctionContents({
        serviceDir: config.serviceDir,
        files: fn.files,
        model: model.manifest,
        modelSource: model.source,
        handlers: functions.filter((other) => other.artifactName === fn.artifactName).map((other) => ({ functionName: other.name, handler: other.handler })),
        reporter,
      }),
    );
  }
  return contents;
}

/** A function whose own package (code and model) is over Lambda's limit fails before any dependency is resolved. */
function checkFunctionAlone(fn: TorchFunction, contents: FunctionContents, modelPath: string): void {
  if (contents.unzippedBytes <= UNZIPPED_LIMIT) return;
  throw new TorchError(
    'TORCH_PACKAGE_TOO_LARGE',
    `Function "${fn.name}" is ${contents.unzippedBytes.toLocaleString('en-US')} bytes unzipped before any dependency ` +
      `(model ${modelPath} ${contents.modelBytes.toLocaleString('en-US')}), over Lambda's limit of ` +
      `${UNZIPPED_LIMIT.toLocaleString('en-US')} bytes for code plus layers. Shrink the model (quantize: dynamic, or a ` +
      'smaller architecture), leave files out with package.patterns, or deploy a container image (up to 10 GB).',
  );
}

/** Checks every function before the long work, so that a mistake is reported in seconds. */
export function planFunctions(options: {
  config: ResolvedConfig;
  functions: TorchFunction[];
  model: PackagedModel;
  reporter: Reporter;
}): FunctionPlan {
  const { config, functions, model } = options;
  const planned = functions.map((fn) => ({ fn, target: targetPlatform(fn.runtime, fn.architecture) }));
  const targets = new Map(planned.map(({ target }) => [targetId(target), target] as const));
  for (const { fn } of planned) checkLayerCount(fn.name, fn.userLayers.length, 1);
  const contents = collectArtifacts(options);
  // Quantizing may shrink the model below the limit, so only the unquantized package is judged this early.
  if (!config.quantize) {
    for (const { fn } of planned) checkFunctionAlone(fn, contents.get(fn.artifactName)!, model.manifest.path);
  }
  return { functions: planned, targets, contents };
}
