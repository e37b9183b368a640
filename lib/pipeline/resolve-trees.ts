import { ResolvedConfig } from '../config/options';
import { Requirements } from '../config/requirements';
import { loadsPickledWeights } from '../model/inspect';
import { checkLoaderSafety } from '../model/safety';
import { checkModelsAgainstTree } from '../model/tree-checks';
import { DependencyTree, buildDependencyTree } from '../resolve/dependency-tree';
import { TargetPlatform } from '../resolve/target';
import { CacheLayout } from '../util/cache';
import { Runner } from '../util/process';
import { Reporter } from '../util/reporter';
import { ServiceModels } from './preflight';

/**
 * One dependency tree per target. The resolved torch versions are what ships, pinned or not:
 * each model's loader is judged against them, each warning said once, and what the loaders need
 * from the dependencies is checked in the tree that ships.
 */
export async function resolveTrees(options: {
  config: ResolvedConfig;
  targets: Map<string, TargetPlatform>;
  requirements: Requirements;
  models: ServiceModels;
  cache: CacheLayout;
  runner: Runner;
  reporter: Reporter;
}): Promise<Map<string, DependencyTree>> {
  const { config, requirements, cache, runner, reporter } = options;
  const manifests = [...options.models.byId.values()].map(({ manifest }) => manifest);
  const trees = new Map<string, DependencyTree>();
  for (const [id, target] of options.targets) {
    const tree = await buildDependencyTree({ config, target, requirements, cache, runner, reporter });
    checkModelsAgainstTree(manifests, tree);
    trees.set(id, tree);
  }
  const warnings = new Set<string>();
  for (const version of torchVersions(trees)) {
    for (const model of manifests) {
      const safety = checkLoaderSafety({ loader: model.loader, pickledWeights: loadsPickledWeights(model), torchVersion: version, allowUnsafeTorch: config.allowUnsafeTorch, modelPath: model.path });
      if (safety.refusal) throw safety.refusal;
      safety.warnings.forEach((warning) => warnings.add(warning));
    }
  }
  warnings.forEach((warning) => reporter.warning(warning));
  return trees;
}

/** The distinct torch versions the trees resolved. */
export function torchVersions(trees: Map<string, DependencyTree>): string[] {
  return [...new Set([...trees.values()].map((tree) => tree.torch.version))];
}
