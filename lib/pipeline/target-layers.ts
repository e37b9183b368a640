import * as fs from 'node:fs';
import * as path from 'node:path';
import { FunctionContents } from '../bundle/function-package';
import { BuiltLayers, LayerArtifact, buildLayers } from '../bundle/layer-build';
import { PackagedModel } from '../model/quantize';
import { DependencyTree } from '../resolve/dependency-tree';
import { TargetPlatform, targetId } from '../resolve/target';
import { ResolvedConfig } from '../config/options';
import { CacheLayout } from '../util/cache';
import { diskFullError, freeBytes } from '../util/disk-space';
import { TorchError } from '../util/errors';
import { formatBytes } from '../util/format';
import { Runner } from '../util/process';
import { Reporter } from '../util/reporter';
import { FunctionPlan } from './plan-functions';
import { LayerOutput } from './types';

/** The layers of one target, built and copied into the output directory. */
export interface TargetLayers {
  built: BuiltLayers;
  /** In the order the function lists them. */
  outputs: LayerOutput[];
}

/** The key in service.layers: one pair of layers per (runtime, architecture). */
export function layerName(target: TargetPlatform, role: LayerArtifact['role']): string {
  const python = target.pythonVersion.replace('.', '');
  const arch = target.architecture === 'arm64' ? 'Arm64' : 'X8664';
  return `torch${role === 'deps' ? 'Deps' : 'Packed'}Py${python}${arch}`;
}

/**
 * Builds the layers of each target, leaving room for the largest function zip of that target,
 * and copies them into `outputDir`.
 */
export async function buildTargetLayers(options: {
  config: ResolvedConfig;
  plan: FunctionPlan;
  contents: Map<string, FunctionContents>;
  trees: Map<string, DependencyTree>;
  model: PackagedModel;
  outputDir: string;
  cache: CacheLayout;
  runner: Runner;
  reporter: Reporter;
}): Promise<Map<string, TargetLayers>> {
  const { config, plan, contents, trees, outputDir, cache, runner, reporter } = options;
  const layers = new Map<string, TargetLayers>();
  for (const [id, target] of plan.targets) {
    const tree = trees.get(id)!;
    const functions = plan.functions.filter((planned) => targetId(planned.target) === id);
    const largest = functions.map(({ fn }) => ({ fn, contents: contents.get(fn.artifactName)! })).sort((a, b) => b.contents.unzippedBytes - a.contents.unzippedBytes)[0];
    let built: BuiltLayers;
    try {
      built = await buildLayers({ config, tree, functionBytes: largest.contents.unzippedBytes, cache, runner, reporter });
    } catch (error) {
      // The layer plan knows the dependencies; say which function left them too little room.
      if (!(error instanceof TorchError) || error.code !== 'TORCH_PACKAGE_TOO_LARGE') throw error;
      throw new TorchError(
        error.code,
        `Function "${largest.fn.name}" has a ${formatBytes(largest.contents.unzippedBytes)} package of its own (model ${options.model.manifest.path} ` +
          `${formatBytes(largest.contents.modelBytes)}), which leaves torch too little room. ${error.message}`,
        { cause: error },
      );
    }
    layers.set(id, { built, outputs: copyLayers(built, target, tree, outputDir, reporter) });
  }
  return layers;
}

/** The layers are the big writes into .serverless/: their sizes are known, so the room is checked first. */
function copyLayers(built: BuiltLayers, target: TargetPlatform, tree: DependencyTree, outputDir: string, reporter: Reporter): LayerOutput[] {
  const layerBytes = built.layers.reduce((sum, layer) => sum + layer.bytes, 0);
  const free = freeBytes(outputDir);
  if (free !== null && free < layerBytes) {
    throw diskFullError({
      dir: outputDir,
      step: `copying the layers of ${target.runtime} ${target.architecture}`,
      neededBytes: layerBytes,
      neededFor: `${built.layers.length} layer zips`,
      holds: 'artifacts',
    });
  }
  return built.layers.map((layer) => {
    const name = layerName(target, layer.role);
    const artifact = path.join(outputDir, `${name}.zip`);
    fs.copyFileSync(layer.path, artifact);
    reporter.verbose(
      `Layer ${name}: ${layer.role === 'deps' ? `${built.uncompressedBytes} bytes of files under /opt/python` : `${built.compression ? `${built.compression.codec} level ${built.compression.level} archive` : 'archive'} of ${built.compressedBytes} bytes unpacked to /tmp at cold start${built.libraries.length ? `, preloading ${built.libraries.join(', ')}` : ''}`}`,
    );
    return {
      name,
      artifact,
      runtime: target.runtime,
      architecture: target.architecture,
      description: `${layer.role === 'deps' ? 'Dependencies' : 'Compressed dependencies'} of torch ${tree.torch.version} for ${target.runtime} ${target.architecture} (serverless-torch)`,
      bytes: layer.bytes,
      unzippedBytes: layer.unzippedBytes,
    };
  });
}
