import { ResolvedConfig } from '../config/options';
import { PackagedModel } from '../model/inspect';
import { QuantizationReport, notQuantizedBecause, quantizeModel } from '../model/quantize';
import { DependencyTree } from '../resolve/dependency-tree';
import { CacheLayout } from '../util/cache';
import { TorchError } from '../util/errors';
import { Runner } from '../util/process';
import { Reporter } from '../util/reporter';
import { FunctionPlan } from './plan-functions';
import { ServiceModels } from './preflight';
import { torchVersions } from './resolve-trees';

/** The models as they ship. */
export interface ShippedModels {
  /** By model id. */
  packaged: Map<string, PackagedModel>;
  /** What quantize: dynamic did to each model it quantized, by model id. */
  quantization: Map<string, QuantizationReport>;
}

/**
 * The service's models as they ship: the user's files, or with `quantize: dynamic` each model
 * quantized with the torch version the functions run, which then replaces the user's file
 * wherever the model travels.
 */
export async function shipModels(options: {
  config: ResolvedConfig;
  plan: FunctionPlan;
  models: ServiceModels;
  trees: Map<string, DependencyTree>;
  cache: CacheLayout;
  runner: Runner;
  reporter: Reporter;
}): Promise<ShippedModels> {
  const { config, plan, models, trees, cache, runner, reporter } = options;
  const packaged = new Map([...models.byId].map(([id, { spec, manifest }]) => [id, { manifest, source: spec.sourcePath }] as const));
  const quantization = new Map<string, QuantizationReport>();
  const quantizable = [...models.byId].filter(([, { manifest }]) => notQuantizedBecause(manifest) === null);
  if (!config.quantize || quantizable.length === 0) return { packaged, quantization };
  const versions = torchVersions(trees);
  if (versions.length > 1) {
    throw new TorchError(
      'TORCH_QUANTIZE_TORCH_VERSIONS_DIFFER',
      `The functions resolved different torch versions (${versions.join(', ')}), but a quantized model is built once ` +
        'with the version they run. Pin torch (requirements.txt or custom.torch.torchVersion).',
    );
  }
  for (const [id, { spec, manifest }] of quantizable) {
    const users = plan.functions.filter((planned) => planned.modelId === id);
    const architectures = [...new Set(users.map((planned) => planned.target.architecture))];
    const quantized = await quantizeModel({ config, model: manifest, sourcePath: spec.sourcePath, torchVersion: versions[0], architectures, cache, runner, reporter });
    packaged.set(id, quantized.packaged);
    quantization.set(id, quantized.report);
  }
  return { packaged, quantization };
}
