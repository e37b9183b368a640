import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { resolveModel } from '../../../lib/config/model-option';
import { inspectModel } from '../../../lib/model/inspect';
import { sha256 } from '../../../lib/util/hash';
import { writeZip } from '../../../lib/zip/write';

/** A safetensors file: the little-endian length of its JSON header, the header, the tensors' bytes. */
function safetensors(): Buffer {
  const header = Buffer.from(JSON.stringify({ 'l.weight': { dtype: 'F32', shape: [1], data_offsets: [0, 4] } }));
  const length = Buffer.alloc(8);
  length.writeBigUInt64LE(BigInt(header.length));
  return Buffer.concat([length, header, Buffer.alloc(4)]);
}

describe('what a model is, and the loader it gets', () => {
  let service: string;
  before(async () => {
    service = fs.mkdtempSync(path.join(os.tmpdir(), 'inspect-'));
    fs.writeFileSync(path.join(service, 'head.safetensors'), safetensors());
    await writeZip(path.join(service, 'program.pt2'), [
      { name: 'program/archive_format', source: { data: Buffer.from('pt2') } },
      { name: 'program/models/model.json', source: { data: Buffer.from('{}') } },
    ]);
    fs.mkdirSync(path.join(service, 'minilm', 'sub'), { recursive: true });
    fs.writeFileSync(path.join(service, 'minilm', 'config.json'), '{"model_type": "bert"}');
    fs.writeFileSync(path.join(service, 'minilm', 'model.safetensors'), safetensors());
    fs.writeFileSync(path.join(service, 'minilm', 'sub', 'tokenizer.json'), '{}');
    fs.writeFileSync(path.join(service, 'minilm', '.gitattributes'), '*.safetensors filter=lfs');
    fs.mkdirSync(path.join(service, 'plain'));
    fs.writeFileSync(path.join(service, 'plain', 'weights.bin'), 'x');
  });
  after(() => fs.rmSync(service, { recursive: true, force: true }));

  const inspect = (option: unknown) => inspectModel(resolveModel(option, service)!);

  it('a safetensors file gets the safetensors loader, with a factory or as the tensors themselves', async () => {
    assert.equal((await inspect('head.safetensors')).loader, 'safetensors');
    const withFactory = await inspect({ path: 'head.safetensors', factory: 'net:build' });
    assert.deepEqual([withFactory.loader, withFactory.factory], ['safetensors', 'net:build']);
  });

  it('a torch.export archive gets the export loader; another loader on it is refused', async () => {
    assert.equal((await inspect('program.pt2')).loader, 'export');
    await assert.rejects(inspect({ path: 'program.pt2', loader: 'torchscript' }), { code: 'TORCH_MODEL_LOADER_MISMATCH', message: /torch\.export program \(\.pt2\) but the loader is "torchscript"/ });
  });

  it('a Hugging Face directory gets the transformers loader and ships every file with its sha256', async () => {
    const model = await inspect({ path: 'minilm', class: 'AutoModelForSequenceClassification', tokenizer: true });
    assert.deepEqual([model.loader, model.kind, model.className, model.tokenizer], ['transformers', 'directory', 'AutoModelForSequenceClassification', 'AutoTokenizer']);
    assert.deepEqual(Object.keys(model.files!), ['config.json', 'model.safetensors', 'sub/tokenizer.json'], 'dot files stay out');
    assert.equal(model.files!['config.json'], sha256('{"model_type": "bert"}'));
    assert.equal(model.bytes, fs.statSync(path.join(service, 'minilm', 'model.safetensors')).size + 22 + 2);
  });

  it('a directory needs a loader that reads directories', async () => {
    await assert.rejects(inspect('plain'), { code: 'TORCH_MODEL_DIRECTORY_LOADER', message: /plain\/ is a directory, without a config\.json.*loader: custom/ });
    await assert.rejects(inspect({ path: 'minilm', loader: 'torchscript' }), { code: 'TORCH_MODEL_DIRECTORY_LOADER', message: /which the torchscript loader cannot read/ });
    await assert.rejects(inspect({ path: 'plain', loader: 'transformers' }), { code: 'TORCH_MODEL_NOT_HUGGING_FACE', message: /no config\.json/ });
    assert.equal((await inspect({ path: 'plain', loader: 'custom', load: 'loaders:load' })).loader, 'custom');
  });

  it('a custom loader takes any file, one torch did not write too, and the file is not sniffed', async () => {
    const model = await inspect({ path: 'plain/weights.bin', loader: 'custom', load: 'loaders:load' });
    assert.deepEqual([model.loader, model.kind, model.load, model.sha256], ['custom', 'file', 'loaders:load', sha256('x')]);
    await assert.rejects(inspect('plain/weights.bin'), { code: 'TORCH_MODEL_UNKNOWN_FORMAT' });
  });

  it('the transformers loader reads a directory, not a file', async () => {
    await assert.rejects(inspect({ path: 'head.safetensors', loader: 'transformers' }), { code: 'TORCH_MODEL_NOT_HUGGING_FACE', message: /is a file/ });
  });

  it('gives the same id to the same model loaded the same way, another to another way', async () => {
    assert.equal((await inspect('head.safetensors')).id, (await inspect('head.safetensors')).id);
    assert.notEqual((await inspect('head.safetensors')).id, (await inspect({ path: 'head.safetensors', factory: 'net:build' })).id);
  });
});
