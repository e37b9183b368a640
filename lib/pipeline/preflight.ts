import { ModelSpec, ResolvedConfig } from '../config/options';
import { Requirements, readRequirements } from '../config/requirements';
import { ModelManifest, inspectModel, loadsPickledWeights } from '../model/inspect';
import { checkQuantizable, notQuantizedBecause } from '../model/quantize';
import { checkLoaderSafety } from '../model/safety';
import { checkExportSupported } from '../model/tree-checks';
import { pinnedVersion } from '../resolve/version';
import { TorchError } from '../util/errors';
import { normaliseProjectName } from '../util/project-name';
import { Reporter } from '../util/reporter';
import { TorchFunction } from './types';

/** The service's models, each inspected once. */
export interface ServiceModels {
  /** By model id (manifest.json "models"): what it is, and the option that named it. */
  byId: Map<string, { spec: ModelSpec; manifest: ModelManifest }>;
  /** Each function's model id, or null for a function that loads none. */
  ofFunction: Map<string, string | null>;
}

/** What is known about the service before any function is packaged. */
export interface Preflight {
  models: ServiceModels;
  requirements: Requirements;
}

/** Inspects each distinct model of the functions once. */
async function inspectModels(functions: TorchFunction[], reporter: Reporter): Promise<ServiceModels> {
  const byId: ServiceModels['byId'] = new Map();
  const ofFunction = new Map<string, string | null>();
  const inspected = new Map<string, ModelManifest>();
  for (const fn of functions) {
    if (!fn.model) {
      ofFunction.set(fn.name, null);
      continue;
    }
    const key = JSON.stringify(fn.model, (name, value) => (name === 'option' ? undefined : value));
    let manifest = inspected.get(key);
    if (!manifest) {
      manifest = await inspectModel(fn.model);
      inspected.set(key, manifest);
      byId.set(manifest.id, { spec: fn.model, manifest });
      reporter.verbose(`Model ${manifest.path}: ${manifest.loader} loader${manifest.factory ? ` with factory ${manifest.factory}` : ''}, ${manifest.kind === 'directory' ? `${Object.keys(manifest.files ?? {}).length} files, ` : ''}sha256 ${manifest.sha256.slice(0, 12)}…`);
    }
    ofFunction.set(fn.name, manifest.id);
  }
  return { byId, ofFunction };
}

/**
 * Requirements the loaders need: safetensors is small and added (with a notice) when missing;
 * transformers is large and must be chosen by the user.
 */
function requirementsForLoaders(requirements: Requirements, models: ModelManifest[], reporter: Reporter): Requirements {
  const named = new Set(requirements.otherLines.map((line) => /^([A-Za-z0-9][A-Za-z0-9._-]*)/.exec(line)?.[1]).filter((name): name is string => Boolean(name)).map(normaliseProjectName));
  const transformers = models.find((model) => model.loader === 'transformers');
  if (transformers && !named.has('transformers')) {
    throw new TorchError(
      'TORCH_MODEL_NEEDS_REQUIREMENT',
      `${transformers.path} is loaded with the transformers loader, but the requirements do not name transformers. Add a line ` +
        'such as "transformers==5.18.0" to the requirements (serverless-torch does not choose its version for you: it is large and its API moves).',
    );
  }
  const safetensors = models.find((model) => model.loader === 'safetensors');
  if (!safetensors || named.has('safetensors') || named.has('transformers')) return requirements;
  reporter.notice(`${safetensors.path} is loaded with safetensors: the safetensors package is added to the requirements (name it there to choose its version).`);
  return { ...requirements, otherLines: [...requirements.otherLines, 'safetensors'], sourceText: `${requirements.sourceText}\nsafetensors` };
}

/**
 * The checks that take seconds and can settle a mistake before minutes of pip: the models, the
 * requirements, an unsafe loader when the torch pin already decides it, what quantization can do.
 */
export async function preflight(options: { config: ResolvedConfig; functions: TorchFunction[]; reporter: Reporter }): Promise<Preflight> {
  const { config, functions, reporter } = options;
  const models = await inspectModels(functions, reporter);
  const manifests = [...models.byId.values()].map(({ manifest }) => manifest);
  let requirements = readRequirements(config.requirementsPath, config.torchVersion);
  if (!requirements.torchSpecifier) {
    reporter.warning('torch is not pinned (requirements.txt or custom.torch.torchVersion): the version first resolved stays cached until the requirements change. Pin it, e.g. torch==2.13.0.');
  }
  requirements = requirementsForLoaders(requirements, manifests, reporter);
  const pinned = pinnedVersion(requirements.torchSpecifier);
  for (const model of manifests) {
    if (pinned) checkExportSupported(model, pinned);
    if (pinned) {
      const { refusal } = checkLoaderSafety({ loader: model.loader, pickledWeights: loadsPickledWeights(model), torchVersion: pinned, allowUnsafeTorch: config.allowUnsafeTorch, modelPath: model.path });
      if (refusal) throw refusal;
    }
    if (config.quantize) {
      checkQuantizable(model);
      const reason = notQuantizedBecause(model);
      if (reason) reporter.notice(reason);
    }
  }
  if (!config.quantize && config.sampleInput) {
    reporter.warning('custom.torch.sampleInput is set but quantize is false: the sample is only used to measure quantization, so it is ignored.');
  }
  return { models, requirements };
}
