import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { ModelManifest } from '../../../lib/model/inspect';
import { checkModelsAgainstTree } from '../../../lib/model/tree-checks';
import { DependencyTree } from '../../../lib/resolve/dependency-tree';
import { listTree } from '../../../lib/util/file-tree';

describe('what the loaders need from the resolved dependencies', () => {
  let dir: string;
  let tree: DependencyTree;
  before(() => {
    dir = fs.mkdtempSync(path.join(os.tmpdir(), 'tree-checks-'));
    const auto = path.join(dir, 'transformers', 'models', 'auto');
    fs.mkdirSync(auto, { recursive: true });
    fs.writeFileSync(path.join(dir, 'transformers', '__init__.py'), '');
    fs.writeFileSync(path.join(auto, 'modeling_auto.py'), 'class AutoModel(_BaseAutoModelClass):\n    pass\n\n\nclass AutoModelForSequenceClassification(_BaseAutoModelClass):\n    pass\n');
    fs.writeFileSync(path.join(auto, 'tokenization_auto.py'), 'class AutoTokenizer:\n    pass\n');
    tree = { dir, files: listTree(dir), target: { runtime: 'python3.11', architecture: 'x86_64' }, torch: { version: '2.13.0+cpu', wheel: 'torch.whl' } } as unknown as DependencyTree;
  });
  after(() => fs.rmSync(dir, { recursive: true, force: true }));

  const model = (fields: Partial<ModelManifest>): ModelManifest => ({ id: 'm1', path: 'models/minilm', kind: 'directory', loader: 'transformers', factory: null, sha256: '', bytes: 1, className: 'AutoModel', ...fields });

  it('accepts Auto classes the resolved transformers defines', () => {
    checkModelsAgainstTree([model({ className: 'AutoModelForSequenceClassification', tokenizer: 'AutoTokenizer' })], tree);
  });

  it('names a class that is not an Auto class of that transformers, with the closest one', () => {
    assert.throws(() => checkModelsAgainstTree([model({ className: 'AutoModelForSequenceClasification' })], tree), {
      code: 'TORCH_MODEL_UNKNOWN_CLASS',
      message: /The class of models\/minilm is "AutoModelForSequenceClasification", which is not an Auto class of the transformers resolved for python3\.11 x86_64\. Did you mean "AutoModelForSequenceClassification"\?/,
    });
  });

  it('refuses a loader whose package did not resolve', () => {
    assert.throws(() => checkModelsAgainstTree([model({ loader: 'safetensors', kind: 'file', path: 'head.safetensors' })], tree), { code: 'TORCH_MODEL_NEEDS_REQUIREMENT', message: /safetensors is not among the dependencies/ });
  });
});
