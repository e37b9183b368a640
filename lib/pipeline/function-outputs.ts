import { FunctionContents, HANDLER_ENV, SHIM_HANDLER } from '../bundle/function-package';
import { checkSnapStart, initBudgetWarning } from '../bundle/init-budget';
import { DEFAULT_TMP_MB, UNZIPPED_LIMIT, checkLayerCount, ephemeralStorageNeeded } from '../bundle/limits';
import { FunctionReport } from '../bundle/report';
import { PackagedModel, QuantizationReport, engineFor } from '../model/quantize';
import { DependencyTree } from '../resolve/dependency-tree';
import { targetId } from '../resolve/target';
import { TorchError } from '../util/errors';
import { Reporter } from '../util/reporter';
import { FunctionZip } from './function-zips';
import { PlannedFunction } from './plan-functions';
import { TargetLayers } from './target-layers';
import { FunctionOutput } from './types';

export interface BuiltService {
  contents: Map<string, FunctionContents>;
  zips: Map<string, FunctionZip>;
  trees: Map<string, DependencyTree>;
  layers: Map<string, TargetLayers>;
  model: PackagedModel;
  quantization: QuantizationReport | null;
}

/**
 * What the plugin writes back for one function: its artifact, handler, environment, layers and
 * /tmp, after the checks that need the built sizes (Lambda's limits, SnapStart, the init budget).
 */
export function functionOutput(planned: PlannedFunction, service: BuiltService, reporter: Reporter): FunctionOutput {
  const { fn, target } = planned;
  const id = targetId(target);
  const tree = service.trees.get(id)!;
  const { built, outputs: layers } = service.layers.get(id)!;
  const contents = service.contents.get(fn.artifactName)!;
  checkLayerCount(fn.name, fn.userLayers.length, layers.length);
  const layerUnzipped = layers.reduce((sum, layer) => sum + layer.unzippedBytes, 0);
  const totalUnzipped = contents.unzippedBytes + layerUnzipped;
  if (totalUnzipped > UNZIPPED_LIMIT) {
    throw new TorchError(
      'TORCH_PACKAGE_TOO_LARGE',
      `Function "${fn.name}" comes to ${totalUnzipped} bytes unzipped with its layers, over Lambda's ${UNZIPPED_LIMIT}: ` +
        `its own package is ${contents.unzippedBytes} bytes (model ${contents.modelBytes}). Make the function package smaller ` +
        '(package.patterns), shrink the model, or deploy a container image.',
    );
  }
  const needed = ephemeralStorageNeeded(built.tmpBytes);
  if (fn.snapStart) {
    checkSnapStart({ functionName: fn.name, target, tmpMbNeeded: needed, ephemeralStorageSize: fn.ephemeralStorageSize, tmpBytes: built.tmpBytes });
  } else {
    const warning = initBudgetWarning({
      functionName: fn.name,
      memorySize: fn.memorySize,
      tmpBytes: built.tmpBytes,
      codec: built.compression?.codec ?? null,
      modelBytes: contents.modelBytes,
      bytecode: Boolean(tree.bytecode),
    });
    if (warning) reporter.warning(warning);
  }
  let ephemeralStorageSize = fn.ephemeralStorageSize;
  if (needed > (fn.ephemeralStorageSize ?? DEFAULT_TMP_MB)) {
    reporter.notice(`Function "${fn.name}": /tmp set to ${needed} MB (ephemeralStorageSize): the compressed dependencies unpack to ${Math.ceil(built.tmpBytes / 1048576)} MiB there at cold start.`);
    ephemeralStorageSize = needed;
  }
  const zip = service.zips.get(fn.artifactName)!;
  const report: FunctionReport = {
    functionName: fn.name,
    target: `${target.runtime} ${target.architecture}`,
    torch: tree.torch,
    code: { unzippedBytes: contents.unzippedBytes, zippedBytes: zip.bytes },
    model: { bytes: contents.modelBytes, loader: service.model.manifest.loader },
    quantization: service.quantization ? { ...service.quantization, engine: engineFor(service.quantization, target.architecture) } : null,
    layers: built.layers.map((layer, index) => ({ name: layers[index].name, role: layer.role, unzippedBytes: layer.unzippedBytes, zippedBytes: layer.bytes })),
    totalUnzippedBytes: totalUnzipped,
    tmpBytes: built.tmpBytes,
    compression: built.compression,
    ephemeralStorageSize: ephemeralStorageSize ?? DEFAULT_TMP_MB,
  };
  return {
    name: fn.name,
    artifact: zip.path,
    handler: SHIM_HANDLER,
    environment: { [HANDLER_ENV]: fn.handler },
    layers: layers.map((layer) => layer.name),
    ephemeralStorageSize,
    report,
  };
}
