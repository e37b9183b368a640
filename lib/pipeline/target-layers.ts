import * as fs from 'node:fs';
import * as path from 'node:path';
import { FunctionContents } from '../bundle/function-package';
import { BuiltLayers, LayerArtifact, buildLayers } from '../bundle/layer-build';
import { DependencyTree } from '../resolve/dependency-tree';
import { TargetPlatform, targetId } from '../resolve/target';
import { ResolvedConfig } from '../config/options';
import { CacheLayout } from '../util/cache';
import { diskFullError, freeBytes } from '../util/disk-space';
import { TorchError } from '../util/errors';
import { formatBytes } from '../util/format';
import { sha256 } from '../util/hash';
import { Runner } from '../util/process';
import { Reporter } from '../util/reporter';
import { FunctionPlan } from './plan-functions';
import { LayerOutput } from './types';
import { knownLayerBytes } from '../bundle/user-layers';

/** The layers of one target, built and copied into the output directory. */
export interface TargetLayers {
  built: BuiltLayers;
  /** In the order the function lists them. */
  outputs: LayerOutput[];
}

/** The service and stage the layers are published for. */
export interface LayerNaming {
  service: string;
  stage: string;
}

// Lambda's rule for a layer name ([a-zA-Z0-9-_]+), at the length the framework keeps function names to.
const LAYER_NAME_MAX = 64;

/**
 * The name Lambda publishes the layer under. Service and stage come first, as the framework
 * names functions, so that stacks in one account and region publish versions of their own
 * layers, never of each other's; a long prefix is shortened with a digest to stay unique.
 */
export function deployedLayerName(naming: LayerNaming, target: TargetPlatform, role: LayerArtifact['role']): string {
  const suffix = `torch-${role}-py${target.pythonVersion.replace('.', '')}-${target.architecture.replace('_', '-')}`;
  const prefix = `${naming.service}-${naming.stage}`.replace(/[^A-Za-z0-9_-]+/g, '-');
  const name = `${prefix}-${suffix}`;
  if (name.length <= LAYER_NAME_MAX) return name;
  const digest = sha256(prefix).slice(0, 8);
  return `${prefix.slice(0, LAYER_NAME_MAX - suffix.length - digest.length - 2)}-${digest}-${suffix}`;
}

/** The key in service.layers (and so the template's logical id): one pair of layers per (runtime, architecture). */
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
  naming: LayerNaming;
  outputDir: string;
  cache: CacheLayout;
  runner: Runner;
  reporter: Reporter;
}): Promise<Map<string, TargetLayers>> {
  const { config, plan, contents, trees, naming, outputDir, cache, runner, reporter } = options;
  const layers = new Map<string, TargetLayers>();
  for (const [id, target] of plan.targets) {
    const tree = trees.get(id)!;
    const functions = plan.functions.filter((planned) => targetId(planned.target) === id);
    // The room kept for a function is its zip and its own layers: Lambda counts them all.
    const largest = functions
      .map(({ fn }) => ({ fn, contents: contents.get(fn.artifactName)!, bytes: contents.get(fn.artifactName)!.unzippedBytes + knownLayerBytes(fn.userLayers) }))
      .sort((a, b) => b.bytes - a.bytes)[0];
    let built: BuiltLayers;
    try {
      built = await buildLayers({ config, tree, functionBytes: largest.bytes, cache, runner, reporter });
    } catch (error) {
      // The layer plan knows the dependencies; say which function left them too little room.
      if (!(error instanceof TorchError) || error.code !== 'TORCH_PACKAGE_TOO_LARGE') throw error;
      throw new TorchError(
        error.code,
        `Function "${largest.fn.name}" has a ${formatBytes(largest.contents.unzippedBytes)} package of its own (models ` +
          `${formatBytes(largest.contents.modelBytes)}), which leaves torch too little room. ${error.message}` +
          (largest.contents.modelBytes ? '\nA model that does not fit beside torch can travel in S3: set the model\'s store to auto or s3.' : ''),
        { cause: error },
      );
    }
    layers.set(id, { built, outputs: copyLayers(built, target, tree, naming, outputDir, reporter) });
  }
  return layers;
}

/** The layers are the big writes into .serverless/: their sizes are known, so the room is checked first. */
function copyLayers(built: BuiltLayers, target: TargetPlatform, tree: DependencyTree, naming: LayerNaming, outputDir: string, reporter: Reporter): LayerOutput[] {
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
      layerName: deployedLayerName(naming, target, layer.role),
      artifact,
      runtime: target.runtime,
      architecture: target.architecture,
      description: `${layer.role === 'deps' ? 'Dependencies' : 'Compressed dependencies'} of torch ${tree.torch.version} for ${target.runtime} ${target.architecture} (serverless-torch)`,
      bytes: layer.bytes,
      unzippedBytes: layer.unzippedBytes,
    };
  });
}
