import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { layOutPackaged, packagedFunction, python311 } from '../support/lambda-layout';
import { runInvocations } from '../../lib/local/invoke';
import { TRANSFORMERS_VERSION, runWithTransformers, transformersWheels } from '../support/hugging-face';
import { CLIS, TEST_CACHE, lastJson, makeService, runSls, serviceYaml, zipMembers } from '../support/sls';
import { WheelIndex, prepareFixtureWheels, startWheelIndex } from '../support/wheel-index';

// Made with the real torch and transformers: a small BERT classifier with random weights and a
// tokenizer built from a vocabulary, a linear head saved as safetensors, a torch.export program,
// and a directory a custom loader reads; then what each answers, for the handlers to match.
const MAKE_MODELS = `import json, os, torch
from safetensors.torch import save_file
from tokenizers import Tokenizer, models, pre_tokenizers
from transformers import BertConfig, BertForSequenceClassification, PreTrainedTokenizerFast
import head

torch.manual_seed(0)
vocab = {w: i for i, w in enumerate(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "hello", "world", "torch", "on", "lambda"])}
tok = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
tok.pre_tokenizer = pre_tokenizers.Whitespace()
fast = PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="[UNK]", pad_token="[PAD]", cls_token="[CLS]", sep_token="[SEP]")
bert = BertForSequenceClassification(BertConfig(vocab_size=len(vocab), hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64, num_labels=3)).eval()
bert.save_pretrained("models/minilm")
fast.save_pretrained("models/minilm")
texts = ["hello world", "torch on lambda"]
with torch.no_grad():
    embed = bert(**fast(texts, return_tensors="pt", padding=True)).logits.tolist()

linear = head.build()
save_file(linear.state_dict(), "model/head.safetensors")
rows = [[0.5, -1.0, 2.0, 0.25]]
with torch.no_grad():
    classify = linear(torch.tensor(rows)).tolist()

class Twice(torch.nn.Module):
    def forward(self, x):
        return x * 2 + 1
torch.export.save(torch.export.export(Twice(), (torch.ones(1, 4),)), "model/program.pt2")

os.makedirs("model/lookup", exist_ok=True)
json.dump({"seven": 7}, open("model/lookup/table.json", "w"))
json.dump({"embed": embed, "classify": classify, "texts": texts, "rows": rows}, open("expected-models.json", "w"))
`;

const FILES: Record<string, string> = {
  'requirements.txt': `torch==2.13.0\ntransformers==${TRANSFORMERS_VERSION}\n`,
  // An API Gateway style handler: two arguments, the model through serverless_torch.model().
  'embed.py': `import torch
import serverless_torch


def handler(event, context):
    loaded = serverless_torch.model()
    batch = loaded.tokenizer(event["texts"], return_tensors="pt", padding=True)
    with torch.no_grad():
        return {"logits": loaded.model(**batch).logits.tolist()}
`,
  'head.py': 'import torch\n\n\ndef build():\n    torch.manual_seed(1)\n    return torch.nn.Linear(4, 3)\n',
  'classify.py': `import torch


def predict(event, context, model):
    with torch.no_grad():
        return {"scores": model(torch.tensor(event["rows"])).tolist()}
`,
  'tok.py': `import torch
import serverless_torch


def main(event, context):
    return {"torch": torch.__version__.split("+")[0], "model": serverless_torch.model()}
`,
  'program.py': `import torch


def run(event, context, model):
    return {"out": model(torch.ones(1, 4)).tolist(), "kind": type(model).__name__}
`,
  'loaders.py': `import json
import os


def load_table(path):
    with open(os.path.join(path, "table.json")) as f:
        return json.load(f)
`,
  'lookup.py': 'def main(event, context, table):\n    return {"value": table[event["key"]]}\n',
};

const FUNCTIONS = `  predict:
    handler: handler.predict
  embed:
    handler: embed.handler
    torch:
      model: { path: models/minilm, loader: transformers, class: AutoModelForSequenceClassification, tokenizer: true }
  classify:
    handler: classify.predict
    torch:
      model: { path: model/head.safetensors, factory: "head:build" }
  tokenize:
    handler: tok.main
    torch: { model: false }
  program:
    handler: program.run
    torch:
      model: model/program.pt2
  lookup:
    handler: lookup.main
    torch:
      model: { path: model/lookup, loader: custom, load: "loaders:load_table" }`;

function closeTo(actual: number[][], expected: number[][], what: string): void {
  assert.equal(actual.length, expected.length, what);
  actual.forEach((row, i) => row.forEach((value, j) => assert.ok(Math.abs(value - expected[i][j]) < 1e-4, `${what} [${i}][${j}]: ${value} vs ${expected[i][j]}`)));
}

describe('the models and handlers people have: per-function models in every format (real CLI, torch, transformers)', function () {
  let index: WheelIndex;
  let service: string;
  let expected: any;
  let packageOutput: string;

  before(async () => {
    const wheels = await prepareFixtureWheels();
    const transformers = await transformersWheels();
    // One file per name: torch's dependencies and transformers' overlap.
    const byName = new Map([...wheels.dependencyWheels, ...transformers].map((wheel) => [path.basename(wheel), wheel]));
    index = await startWheelIndex({ torchWheels: [wheels.torchWheelRetagged], otherWheels: [...byName.values()] });
    service = makeService({ files: { ...FILES, 'serverless.yml': serviceYaml({ torchIndexUrl: index.torchUrl, indexUrl: index.simpleUrl, functions: FUNCTIONS }) } });
    await runWithTransformers(MAKE_MODELS, service);
    expected = JSON.parse(fs.readFileSync(path.join(service, 'expected-models.json'), 'utf8'));
    const result = await runSls('serverless', ['package', '--verbose'], service);
    packageOutput = result.stdout + result.stderr;
    assert.equal(result.code, 0, packageOutput);
  });
  after(async () => {
    await index?.close();
    if (service) fs.rmSync(service, { recursive: true, force: true });
  });

  it('ships every model once in the shared zip, each function naming its own, and reports each handler form', () => {
    const members = zipMembers(path.join(service, '.serverless', 'digits-torch.zip'));
    for (const file of ['model/model.pt', 'models/minilm/config.json', 'models/minilm/model.safetensors', 'models/minilm/tokenizer.json', 'model/head.safetensors', 'model/program.pt2', 'model/lookup/table.json']) {
      assert.equal(members.filter((member) => member === file).length, 1, file);
    }
    const template = JSON.parse(fs.readFileSync(path.join(service, '.serverless', 'cloudformation-template-update-stack.json'), 'utf8'));
    const modelOf = (name: string) => template.Resources[`${name.charAt(0).toUpperCase()}${name.slice(1)}LambdaFunction`].Properties.Environment.Variables.SERVERLESS_TORCH_MODEL;
    const ids = ['predict', 'embed', 'classify', 'program', 'lookup'].map(modelOf);
    assert.equal(new Set(ids).size, 5, ids.join(', '));
    assert.equal(modelOf('tokenize'), undefined);
    assert.match(packageOutput, /handler: handler\(event, context\); the model is serverless_torch\.model\(\)/);
    assert.match(packageOutput, /handler: predict\(event, context, model\)/);
    assert.match(packageOutput, /model models\/minilm \(transformers\)/);
    assert.match(packageOutput, /model: none/);
  });

  for (const cli of CLIS) {
    it(`invoke local (${cli}) runs each function with its own model and answers what the model itself answers`, async () => {
      const invoke = async (name: string, data: unknown) => {
        const result = await runSls(cli, ['invoke', 'local', '-f', name, '-d', JSON.stringify(data)], service);
        assert.equal(result.code, 0, `${name}:\n${result.stdout}\n${result.stderr}`);
        return lastJson(result.stdout) as any;
      };
      closeTo((await invoke('embed', { texts: expected.texts })).logits, expected.embed, 'embed');
      closeTo((await invoke('classify', { rows: expected.rows })).scores, expected.classify, 'classify');
      assert.deepEqual(await invoke('tokenize', {}), { torch: '2.13.0', model: null });
      assert.deepEqual((await invoke('program', {})).out, [[3, 3, 3, 3]]);
      assert.deepEqual(await invoke('lookup', { key: 'seven' }), { value: 7 });
    });
  }

  it('the packaged artifacts run the Hugging Face function in a Lambda-like layout', async () => {
    const root = fs.mkdtempSync(path.join(TEST_CACHE, 'models-layout-'));
    try {
      const packaged = packagedFunction(service, 'embed');
      const layout = await layOutPackaged(packaged, root, TEST_CACHE);
      const { outcomes } = await runInvocations({
        layout,
        interpreter: await python311(),
        events: [{ texts: expected.texts }],
        environment: {},
        functionName: 'embed',
        memorySize: 3008,
        timeout: 60,
        packagedEnvironment: packaged.environment,
      });
      assert.ok(outcomes[0] && 'result' in outcomes[0], JSON.stringify(outcomes[0]));
      closeTo((outcomes[0].result as any).logits, expected.embed, 'embed in the layout');
    } finally {
      fs.rmSync(root, { recursive: true, force: true });
    }
  });
});
