import { ResolvedConfig } from '../config/options';
import { Requirements } from '../config/requirements';
import { ModelManifest } from '../model/inspect';
import { checkLoaderSafety } from '../model/safety';
import { DependencyTree, buildDependencyTree } from '../resolve/dependency-tree';
import { TargetPlatform } from '../resolve/target';
import { CacheLayout } from '../util/cache';
import { Runner } from '../util/process';
import { Reporter } from '../util/reporter';

/**
 * One dependency tree per target. The resolved torch versions are what ships, pinned or not:
 * the loader is judged against each of them, and each warning is said once.
 */
export async function resolveTrees(options: {
  config: ResolvedConfig;
  targets: Map<string, TargetPlatform>;
  requirements: Requirements;
  model: ModelManifest;
  cache: CacheLayout;
  runner: Runner;
  reporter: Reporter;
}): Promise<Map<string, DependencyTree>> {
  const { config, requirements, model, cache, runner, reporter } = options;
  const trees = new Map<string, DependencyTree>();
  for (const [id, target] of options.targets) {
    trees.set(id, await buildDependencyTree({ config, target, requirements, cache, runner, reporter }));
  }
  const warnings = new Set<string>();
  for (const version of torchVersions(trees)) {
    const safety = checkLoaderSafety({ loader: model.loader, torchVersion: version, allowUnsafeTorch: config.allowUnsafeTorch, modelPath: model.path });
    if (safety.refusal) throw safety.refusal;
    safety.warnings.forEach((warning) => warnings.add(warning));
  }
  warnings.forEach((warning) => reporter.warning(warning));
  return trees;
}

/** The distinct torch versions the trees resolved. */
export function torchVersions(trees: Map<string, DependencyTree>): string[] {
  return [...new Set([...trees.values()].map((tree) => tree.torch.version))];
}
