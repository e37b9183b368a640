import { FunctionContents } from '../bundle/function-package';
import { ResolvedConfig } from '../config/options';
import { ModelManifest } from '../model/inspect';
import { PackagedModel, QuantizationReport, quantizeModel } from '../model/quantize';
import { DependencyTree } from '../resolve/dependency-tree';
import { CacheLayout } from '../util/cache';
import { TorchError } from '../util/errors';
import { Runner } from '../util/process';
import { Reporter, silentReporter } from '../util/reporter';
import { FunctionPlan, collectArtifacts } from './plan-functions';
import { torchVersions } from './resolve-trees';

/** The model file each function zip carries, and those zips' contents. */
export interface ShippedModel {
  model: PackagedModel;
  quantization: QuantizationReport | null;
  contents: Map<string, FunctionContents>;
}

/**
 * The service's model as it ships: the user's file, or with `quantize: dynamic` the file
 * quantized with the torch version the functions run, which then replaces the user's file in
 * every function zip.
 */
export async function shipModel(options: {
  config: ResolvedConfig;
  plan: FunctionPlan;
  model: ModelManifest;
  trees: Map<string, DependencyTree>;
  cache: CacheLayout;
  runner: Runner;
  reporter: Reporter;
}): Promise<ShippedModel> {
  const { config, plan, model, trees, cache, runner, reporter } = options;
  if (!config.quantize) return { model: { manifest: model, source: config.model.sourcePath }, quantization: null, contents: plan.contents };
  const versions = torchVersions(trees);
  if (versions.length > 1) {
    throw new TorchError(
      'TORCH_QUANTIZE_TORCH_VERSIONS_DIFFER',
      `The functions resolved different torch versions (${versions.join(', ')}), but the quantized model is built once ` +
        'with the version they run. Pin torch (requirements.txt or custom.torch.torchVersion).',
    );
  }
  const architectures = [...new Set([...plan.targets.values()].map((target) => target.architecture))];
  const quantized = await quantizeModel({ config, model, torchVersion: versions[0], architectures, cache, runner, reporter });
  const functions = plan.functions.map(({ fn }) => fn);
  // Collected again, quietly: what the first collection had to say is said already.
  const contents = collectArtifacts({ config, functions, model: quantized.packaged, reporter: silentReporter });
  return { model: quantized.packaged, quantization: quantized.report, contents };
}
