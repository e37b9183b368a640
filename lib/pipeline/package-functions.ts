import { ResolvedConfig } from '../config/options';
import { openCache } from '../util/cache';
import { Runner } from '../util/process';
import { Reporter } from '../util/reporter';
import { functionOutput } from './function-outputs';
import { zipFunctions } from './function-zips';
import { planFunctions } from './plan-functions';
import { preflight } from './preflight';
import { resolveTrees } from './resolve-trees';
import { shipModels } from './ship-models';
import { LayerNaming, buildTargetLayers } from './target-layers';
import { PackageOutput, TorchFunction } from './types';

/**
 * Builds everything a deploy of the torch functions needs, into `outputDir`, as a list of stages.
 * Nothing here touches the framework: the plugin class writes the result back into the service in
 * one place.
 */
export async function packageTorchFunctions(options: {
  config: ResolvedConfig;
  functions: TorchFunction[];
  naming: LayerNaming;
  outputDir: string;
  runner: Runner;
  reporter: Reporter;
}): Promise<PackageOutput> {
  const { config, functions, naming, outputDir, runner, reporter } = options;
  const cache = openCache(config.cacheDir);
  const checked = await preflight({ config, functions, reporter });
  const plan = planFunctions({ config, functions, models: checked.models, reporter });
  const trees = await resolveTrees({ config, targets: plan.targets, requirements: checked.requirements, models: checked.models, cache, runner, reporter });
  const shipped = await shipModels({ config, plan, models: checked.models, trees, cache, runner, reporter });
  const zips = await zipFunctions({ contents: shipped.contents, outputDir, reporter });
  const layers = await buildTargetLayers({ plan, contents: shipped.contents, trees, naming, outputDir, cache, reporter });
  const built = { ...shipped, zips, trees, layers };
  return {
    functions: plan.functions.map((planned) => functionOutput(planned, built, reporter)),
    layers: [...layers.values()].flatMap((target) => target.outputs),
  };
}
