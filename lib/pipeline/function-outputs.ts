import { HANDLER_ENV, MODEL_ENV, SHIM_HANDLER } from '../bundle/function-package';
import { checkSnapStart, initBudgetWarning, memoryWarning } from '../bundle/init-budget';
import { DEFAULT_TMP_MB, UNZIPPED_LIMIT, checkLayerCount, ephemeralStorageNeeded } from '../bundle/limits';
import { FunctionReport } from '../bundle/report';
import { PackagedModel } from '../model/inspect';
import { QuantizationReport, engineFor } from '../model/quantize';
import { DependencyTree } from '../resolve/dependency-tree';
import { targetId } from '../resolve/target';
import { TorchError } from '../util/errors';
import { Reporter } from '../util/reporter';
import { FunctionZip } from './function-zips';
import { PlannedFunction } from './plan-functions';
import { TargetLayers } from './target-layers';
import { FunctionOutput, TorchFunction } from './types';
import { FunctionContents } from '../bundle/function-package';
import { knownLayerBytes } from '../bundle/user-layers';
import { formatBytes } from '../util/format';

export interface BuiltService {
  contents: Map<string, FunctionContents>;
  zips: Map<string, FunctionZip>;
  trees: Map<string, DependencyTree>;
  layers: Map<string, TargetLayers>;
  /** The models as they ship, by id. */
  packaged: Map<string, PackagedModel>;
  /** What quantize: dynamic did, by model id. */
  quantization: Map<string, QuantizationReport>;
}

/**
 * Lambda counts the function zip, the plugin's layers and the user's own layers against one
 * limit. Layers published elsewhere (ARNs) cannot be measured here: the user hears how much room
 * is left for them.
 */
function checkUnzippedTotal(fn: TorchFunction, contents: FunctionContents, ourLayerBytes: number, reporter: Reporter): number {
  const userBytes = knownLayerBytes(fn.userLayers);
  const total = contents.unzippedBytes + ourLayerBytes + userBytes;
  const userPart = userBytes ? `, your layers ${fn.userLayers.filter((layer) => layer.unzippedBytes !== null).map((layer) => `${layer.label} ${layer.unzippedBytes}`).join(', ')}` : '';
  if (total > UNZIPPED_LIMIT) {
    throw new TorchError(
      'TORCH_PACKAGE_TOO_LARGE',
      `Function "${fn.name}" comes to ${total} bytes unzipped with its layers, over Lambda's ${UNZIPPED_LIMIT}: ` +
        `its own package is ${contents.unzippedBytes} bytes (model ${contents.modelBytes}), the dependency layers ${ourLayerBytes}${userPart}. ` +
        'Make the function package smaller (package.patterns), shrink the model, drop a layer, or deploy a container image.',
    );
  }
  const remote = fn.userLayers.filter((layer) => layer.unzippedBytes === null);
  if (remote.length) {
    reporter.notice(
      `Function "${fn.name}": serverless-torch cannot measure ${remote.map((layer) => layer.label).join(', ')} (published elsewhere): ` +
        `together they must unzip to at most ${formatBytes(UNZIPPED_LIMIT - total)} (${UNZIPPED_LIMIT - total} bytes), what Lambda's limit leaves.`,
    );
  }
  return total;
}

/**
 * What the plugin writes back for one function: its artifact, handler, environment, layers and
 * /tmp, after the checks that need the built sizes (Lambda's limits, SnapStart, the init budget).
 */
export function functionOutput(planned: PlannedFunction, service: BuiltService, reporter: Reporter): FunctionOutput {
  const { fn, target, modelId } = planned;
  const model = modelId ? service.packaged.get(modelId)!.manifest : null;
  const modelBytes = model?.bytes ?? 0;
  const id = targetId(target);
  const tree = service.trees.get(id)!;
  const { built, outputs: layers } = service.layers.get(id)!;
  const contents = service.contents.get(fn.artifactName)!;
  checkLayerCount(fn.name, fn.userLayers.length, layers.length);
  const totalUnzipped = checkUnzippedTotal(fn, contents, layers.reduce((sum, layer) => sum + layer.unzippedBytes, 0), reporter);
  const s3 = model?.s3 ?? null;
  // A model in S3 is downloaded into /tmp; a directory's archive is unpacked beside it.
  const modelTmpBytes = s3 ? s3.size * (s3.archive ? 2 : 1) : 0;
  const tmpBytes = built.tmpBytes + modelTmpBytes;
  const needed = ephemeralStorageNeeded(tmpBytes);
  if (fn.snapStart) {
    checkSnapStart({ functionName: fn.name, target, tmpMbNeeded: needed, ephemeralStorageSize: fn.ephemeralStorageSize, tmpBytes });
  } else {
    const warning = initBudgetWarning({
      functionName: fn.name,
      memorySize: fn.memorySize,
      tmpBytes: built.tmpBytes,
      codec: built.compression?.codec ?? null,
      modelBytes,
      downloadBytes: s3?.size ?? 0,
      bytecode: Boolean(tree.bytecode),
    });
    if (warning) reporter.warning(warning);
  }
  const memory = memoryWarning({ functionName: fn.name, memorySize: fn.memorySize, modelBytes });
  if (memory) reporter.warning(memory);
  let ephemeralStorageSize = fn.ephemeralStorageSize;
  if (needed > (fn.ephemeralStorageSize ?? DEFAULT_TMP_MB)) {
    const parts = [built.tmpBytes ? `the compressed dependencies unpack to ${Math.ceil(built.tmpBytes / 1048576)} MiB there` : '', s3 ? `the model from S3 takes ${Math.ceil(modelTmpBytes / 1048576)} MiB` : ''].filter(Boolean);
    reporter.notice(`Function "${fn.name}": /tmp set to ${needed} MB (ephemeralStorageSize): at cold start ${parts.join(' and ')}.`);
    ephemeralStorageSize = needed;
  }
  const zip = service.zips.get(fn.artifactName)!;
  const quantization = modelId ? service.quantization.get(modelId) : undefined;
  const report: FunctionReport = {
    functionName: fn.name,
    target: `${target.runtime} ${target.architecture}`,
    torch: tree.torch,
    code: { unzippedBytes: contents.unzippedBytes, zippedBytes: zip.bytes },
    model: model
      ? { path: model.path, bytes: s3 ? 0 : model.bytes, s3Bytes: s3?.size ?? 0, loader: model.loader, otherModelBytes: contents.modelBytes - (s3 ? 0 : model.bytes) }
      : { path: null, bytes: 0, s3Bytes: 0, loader: 'none', otherModelBytes: contents.modelBytes },
    handler: { name: fn.handler, form: contents.handlerForms[fn.name] ?? 'unknown' },
    quantization: quantization ? { ...quantization, engine: engineFor(quantization, target.architecture) } : null,
    layers: built.layers.map((layer, index) => ({ name: layers[index].name, role: layer.role, unzippedBytes: layer.unzippedBytes, zippedBytes: layer.bytes })),
    buildTools: { strip: tree.symbols?.tool ?? null, bytecode: tree.bytecode?.python ?? null },
    totalUnzippedBytes: totalUnzipped,
    tmpBytes,
    compression: built.compression,
    ephemeralStorageSize: ephemeralStorageSize ?? DEFAULT_TMP_MB,
  };
  return {
    name: fn.name,
    artifact: zip.path,
    handler: SHIM_HANDLER,
    environment: { [HANDLER_ENV]: fn.handler, ...(modelId ? { [MODEL_ENV]: modelId } : {}) },
    layers: layers.map((layer) => layer.name),
    ephemeralStorageSize,
    modelObject: s3 ? { key: s3.key, size: s3.size } : null,
    report,
  };
}
