import { ResolvedConfig } from '../config/options';
import { openCache } from '../util/cache';
import { Runner } from '../util/process';
import { Reporter } from '../util/reporter';
import { functionOutput } from './function-outputs';
import { zipFunctions } from './function-zips';
import { planFunctions } from './plan-functions';
import { preflight } from './preflight';
import { resolveTrees } from './resolve-trees';
import { shipModel } from './ship-model';
import { buildTargetLayers } from './target-layers';
import { PackageOutput, TorchFunction } from './types';

/**
 * Builds everything a deploy of the torch functions needs, into `outputDir`, as a list of stages.
 * Nothing here touches the framework: the plugin class writes the result back into the service in
 * one place.
 */
export async function packageTorchFunctions(options: {
  config: ResolvedConfig;
  functions: TorchFunction[];
  outputDir: string;
  runner: Runner;
  reporter: Reporter;
}): Promise<PackageOutput> {
  const { config, functions, outputDir, runner, reporter } = options;
  const cache = openCache(config.cacheDir);
  const checked = await preflight({ config, reporter });
  const plan = planFunctions({ config, functions, model: { manifest: checked.model, source: config.model.sourcePath }, reporter });
  const trees = await resolveTrees({ config, targets: plan.targets, requirements: checked.requirements, model: checked.model, cache, runner, reporter });
  const shipped = await shipModel({ config, plan, model: checked.model, trees, cache, runner, reporter });
  const zips = await zipFunctions({ contents: shipped.contents, outputDir, reporter });
  const layers = await buildTargetLayers({ config, plan, contents: shipped.contents, trees, model: shipped.model, outputDir, cache, runner, reporter });
  const built = { ...shipped, zips, trees, layers };
  return {
    functions: plan.functions.map((planned) => functionOutput(planned, built, reporter)),
    layers: [...layers.values()].flatMap((target) => target.outputs),
  };
}
