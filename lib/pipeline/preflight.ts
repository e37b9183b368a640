import { ResolvedConfig } from '../config/options';
import { Requirements, readRequirements } from '../config/requirements';
import { ModelManifest, inspectModel } from '../model/inspect';
import { checkQuantizable } from '../model/quantize';
import { checkLoaderSafety } from '../model/safety';
import { pinnedVersion } from '../resolve/version';
import { Reporter } from '../util/reporter';

/** What is known about the service before any function is looked at. */
export interface Preflight {
  model: ModelManifest;
  requirements: Requirements;
}

/**
 * The checks that take seconds and can settle a mistake before minutes of pip: the model file,
 * the requirements, and an unsafe loader when the torch pin already decides it.
 */
export async function preflight(options: { config: ResolvedConfig; reporter: Reporter }): Promise<Preflight> {
  const { config, reporter } = options;
  const model = await inspectModel(config.model);
  reporter.verbose(`Model ${model.path}: ${model.loader} loader${model.factory ? ` with factory ${model.factory}` : ''}, sha256 ${model.sha256.slice(0, 12)}…`);
  const requirements = readRequirements(config.requirementsPath, config.torchVersion);
  if (!requirements.torchSpecifier) {
    reporter.warning('torch is not pinned (requirements.txt or custom.torch.torchVersion): the version first resolved stays cached until the requirements change. Pin it, e.g. torch==2.13.0.');
  }
  const pinned = pinnedVersion(requirements.torchSpecifier);
  if (pinned) {
    const { refusal } = checkLoaderSafety({ loader: model.loader, torchVersion: pinned, allowUnsafeTorch: config.allowUnsafeTorch, modelPath: model.path });
    if (refusal) throw refusal;
  }
  if (config.quantize) {
    checkQuantizable(model);
  } else if (config.sampleInput) {
    reporter.warning('custom.torch.sampleInput is set but quantize is false: the sample is only used to measure quantization, so it is ignored.');
  }
  return { model, requirements };
}
