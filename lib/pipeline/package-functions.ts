import { ResolvedConfig } from '../config/options';
import { ModelManifest } from '../model/inspect';
import { CacheLayout, openCache } from '../util/cache';
import { TorchError } from '../util/errors';
import { formatBytes } from '../util/format';
import { Runner } from '../util/process';
import { Reporter, silentReporter } from '../util/reporter';
import { functionOutput } from './function-outputs';
import { zipFunctions } from './function-zips';
import { collectArtifacts, planFunctions } from './plan-functions';
import { Preflight, ServiceModels, preflight } from './preflight';
import { resolveTrees } from './resolve-trees';
import { shipModels } from './ship-models';
import { storeModels } from './store-models';
import { LayerNaming, buildTargetLayers } from './target-layers';
import { PackageOutput, TorchFunction } from './types';

export interface PackageOptions {
  config: ResolvedConfig;
  functions: TorchFunction[];
  naming: LayerNaming;
  outputDir: string;
  runner: Runner;
  reporter: Reporter;
}

/**
 * Builds everything a deploy of the torch functions needs, into `outputDir`, as a list of stages.
 * Nothing here touches the framework: the plugin class writes the result back into the service in
 * one place. A model with `store: auto` travels in its function zip unless that does not fit
 * Lambda's limit beside the dependencies: then, measured, it goes to S3 (largest first) and the
 * stages run again, from the cache.
 */
export async function packageTorchFunctions(options: PackageOptions): Promise<PackageOutput> {
  const { config, functions, reporter } = options;
  const cache = openCache(config.cacheDir);
  const checked = await preflight({ config, functions, reporter });
  const inS3 = new Set([...checked.models.byId].filter(([, { spec }]) => spec.store === 's3').map(([id]) => id));
  for (;;) {
    try {
      return await packageWith({ ...options, cache, checked, inS3 });
    } catch (error) {
      const next = modelToMove(error, checked.models, inS3);
      if (!next) throw error;
      reporter.notice(
        `${next.path} (${formatBytes(next.bytes)}) goes to S3 (store: auto): in the function zip it does not fit ` +
          "Lambda's limit beside the dependencies. It is uploaded to the deployment bucket at deploy and fetched into /tmp at cold start; " +
          'set store: package to refuse instead, or store: s3 to say so.',
      );
      reporter.verbose(`Packaged with ${next.path} in the zip: ${(error as Error).message}`);
      inS3.add(next.id);
    }
  }
}

/** The largest model still in a zip that `store: auto` lets go to S3, when packaging failed for size. */
function modelToMove(error: unknown, models: ServiceModels, inS3: Set<string>): ModelManifest | null {
  if (!(error instanceof TorchError) || error.code !== 'TORCH_PACKAGE_TOO_LARGE') return null;
  const movable = [...models.byId.values()].filter(({ spec, manifest }) => spec.store === 'auto' && !inS3.has(manifest.id)).map(({ manifest }) => manifest);
  return movable.sort((a, b) => b.bytes - a.bytes)[0] ?? null;
}

/** The stages, with the models in `inS3` traveling in S3. */
async function packageWith(options: PackageOptions & { cache: CacheLayout; checked: Preflight; inS3: Set<string> }): Promise<PackageOutput> {
  const { config, functions, naming, outputDir, runner, reporter, cache, checked, inS3 } = options;
  const plan = planFunctions({ config, functions, models: checked.models, inS3, reporter });
  const trees = await resolveTrees({ config, targets: plan.targets, requirements: checked.requirements, models: checked.models, cache, runner, reporter });
  const shipped = await shipModels({ config, plan, models: checked.models, trees, cache, runner, reporter });
  const packaged = await storeModels({ packaged: shipped.packaged, inS3, outputDir, reporter });
  // Collected again, quietly: what the first collection had to say is said already.
  const contents = collectArtifacts({ config, functions: plan.functions, packaged, reporter: silentReporter });
  const zips = await zipFunctions({ contents, outputDir, reporter });
  const layers = await buildTargetLayers({ config, plan, contents, trees, naming, outputDir, cache, runner, reporter });
  const built = { contents, packaged, quantization: shipped.quantization, zips, trees, layers };
  return {
    functions: plan.functions.map((planned) => functionOutput(planned, built, reporter)),
    layers: [...layers.values()].flatMap((target) => target.outputs),
  };
}
