import { FunctionContents, collectFunctionContents } from '../bundle/function-package';
import { UNZIPPED_LIMIT, checkLayerCount } from '../bundle/limits';
import { knownLayerBytes } from '../bundle/user-layers';
import { ResolvedConfig } from '../config/options';
import { PackagedModel } from '../model/inspect';
import { TargetPlatform, targetId, targetPlatform } from '../resolve/target';
import { TorchError } from '../util/errors';
import { Reporter } from '../util/reporter';
import { ServiceModels } from './preflight';
import { TorchFunction } from './types';

export interface PlannedFunction {
  fn: TorchFunction;
  target: TargetPlatform;
  /** Its model's id in the manifest, or null. */
  modelId: string | null;
}

/** Which targets the service builds for, and what goes into each function zip. */
export interface FunctionPlan {
  functions: PlannedFunction[];
  /** Targets by targetId, in the order their first function appears. */
  targets: Map<string, TargetPlatform>;
  /** Function zip contents by artifact name: functions packaged together share one. */
  contents: Map<string, FunctionContents>;
}

/** Each artifact's contents, with the models of every function packaged into it (each model once). */
export function collectArtifacts(options: {
  config: ResolvedConfig;
  functions: PlannedFunction[];
  packaged: Map<string, PackagedModel>;
  reporter: Reporter;
}): Map<string, FunctionContents> {
  const { config, functions, packaged, reporter } = options;
  const contents = new Map<string, FunctionContents>();
  for (const { fn } of functions) {
    if (contents.has(fn.artifactName)) continue;
    const members = functions.filter((other) => other.fn.artifactName === fn.artifactName);
    const modelIds = [...new Set(members.map((member) => member.modelId).filter((id): id is string => id !== null))];
    contents.set(
      fn.artifactName,
      collectFunctionContents({
        serviceDir: config.serviceDir,
        files: fn.files,
        models: modelIds.map((id) => packaged.get(id)!),
        handlers: members.map((member) => ({ functionName: member.fn.name, handler: member.fn.handler })),
        reporter,
      }),
    );
  }
  return contents;
}

/** A function whose own package and layers are over Lambda's limit fails before any dependency is resolved. */
function checkFunctionAlone(fn: TorchFunction, contents: FunctionContents): void {
  const bytes = contents.unzippedBytes + knownLayerBytes(fn.userLayers);
  if (bytes <= UNZIPPED_LIMIT) return;
  throw new TorchError(
    'TORCH_PACKAGE_TOO_LARGE',
    `Function "${fn.name}" is ${bytes.toLocaleString('en-US')} bytes unzipped before any dependency ` +
      `(models ${contents.modelBytes.toLocaleString('en-US')}${knownLayerBytes(fn.userLayers) ? `, its own layers ${knownLayerBytes(fn.userLayers).toLocaleString('en-US')}` : ''}), over Lambda's limit of ` +
      `${UNZIPPED_LIMIT.toLocaleString('en-US')} bytes for code plus layers. ` +
      `${contents.modelBytes ? 'Let the model travel in S3 (model store: auto or s3), shrink' : 'Shrink'} the model (quantize: dynamic, or a ` +
      'smaller architecture), leave files out with package.patterns, or deploy a container image (up to 10 GB).',
  );
}

/** Checks every function before the long work, so that a mistake is reported in seconds. */
export function planFunctions(options: {
  config: ResolvedConfig;
  functions: TorchFunction[];
  models: ServiceModels;
  /** Ids of the models that travel in S3: their bytes are in no zip. */
  inS3: Set<string>;
  reporter: Reporter;
}): FunctionPlan {
  const { config, functions, models, inS3, reporter } = options;
  const planned = functions.map((fn) => ({ fn, target: targetPlatform(fn.runtime, fn.architecture), modelId: models.ofFunction.get(fn.name) ?? null }));
  const targets = new Map(planned.map(({ target }) => [targetId(target), target] as const));
  for (const { fn } of planned) checkLayerCount(fn.name, fn.userLayers.length, 1);
  const packaged = new Map([...models.byId].map(([id, { spec, manifest }]) => [id, { manifest, source: spec.sourcePath, inS3: inS3.has(id) }] as const));
  const contents = collectArtifacts({ config, functions: planned, packaged, reporter });
  // Quantizing may shrink a model below the limit, so only unquantized packages are judged this early.
  if (!config.quantize) {
    for (const { fn } of planned) checkFunctionAlone(fn, contents.get(fn.artifactName)!);
  }
  return { functions: planned, targets, contents };
}
