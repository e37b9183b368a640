import * as fs from 'node:fs';
import * as path from 'node:path';
import { suggestion } from '../config/checks';
import { DependencyTree } from '../resolve/dependency-tree';
import { compareReleases, releaseOf } from '../resolve/version';
import { TorchError } from '../util/errors';
import { ModelManifest } from './inspect';

/** torch.export.save and torch.export.load first shipped in torch 2.1. */
const EXPORT_SINCE = '2.1.0';

/** A torch.export program needs a torch with torch.export.load: said as soon as the torch version is known. */
export function checkExportSupported(model: ModelManifest, torchVersion: string): void {
  if (model.loader !== 'export' || compareReleases(releaseOf(torchVersion), releaseOf(EXPORT_SINCE)) >= 0) return;
  throw new TorchError(
    'TORCH_EXPORT_UNSUPPORTED',
    `${model.path} is a torch.export program, but the functions run torch ${torchVersion}, which has no torch.export.load ` +
      `(torch ${EXPORT_SINCE} and later). Pin a newer torch, or save the model with torch.jit.save.`,
  );
}

/** The Auto classes the resolved transformers defines (transformers/models/auto/*.py). */
function autoClasses(tree: DependencyTree): Set<string> {
  const dir = path.join(tree.dir, 'transformers', 'models', 'auto');
  const names = new Set<string>();
  for (const file of fs.existsSync(dir) ? fs.readdirSync(dir).filter((name) => name.endsWith('.py')) : []) {
    const source = fs.readFileSync(path.join(dir, file), 'utf8');
    for (const match of source.matchAll(/^class (Auto\w+)\b|^(Auto\w+) = /gm)) names.add(match[1] ?? match[2]);
  }
  return names;
}

function hasPackage(tree: DependencyTree, name: string): boolean {
  return tree.files.some((file) => file.path === `${name}/__init__.py`);
}

/**
 * What each model's loader needs from the resolved dependencies: checked on the tree that
 * ships, so a mistake is said at package time rather than at the first cold start.
 */
export function checkModelsAgainstTree(models: ModelManifest[], tree: DependencyTree): void {
  const where = `${tree.target.runtime} ${tree.target.architecture}`;
  for (const model of models) {
    checkExportSupported(model, tree.torch.version);
    for (const needed of model.loader === 'transformers' ? ['transformers'] : model.loader === 'safetensors' ? ['safetensors'] : []) {
      if (hasPackage(tree, needed)) continue;
      throw new TorchError(
        'TORCH_MODEL_NEEDS_REQUIREMENT',
        `${model.path} is loaded with the ${model.loader} loader, but ${needed} is not among the dependencies resolved for ${where}. Add ${needed} to the requirements.`,
      );
    }
    if (model.loader !== 'transformers') continue;
    const known = autoClasses(tree);
    for (const [option, name] of [['class', model.className], ['tokenizer', model.tokenizer], ['processor', model.processor]] as const) {
      if (!name || known.has(name)) continue;
      throw new TorchError(
        'TORCH_MODEL_UNKNOWN_CLASS',
        `The ${option} of ${model.path} is "${name}", which is not an Auto class of the transformers resolved for ${where}.` +
          `${suggestion(name, [...known])} Use one of its Auto classes, such as AutoModel, AutoModelForSequenceClassification, AutoTokenizer or AutoProcessor.`,
      );
    }
  }
}
