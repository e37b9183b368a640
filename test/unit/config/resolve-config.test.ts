import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { DEFAULT_TORCH_INDEX_URL } from '../../../lib/config/options';
import { resolveConfig } from '../../../lib/config/resolve-config';
import { functionModel } from '../../../lib/config/model-option';
import { TorchError } from '../../../lib/util/errors';

describe('config', () => {
  let serviceDir: string;
  before(() => {
    serviceDir = fs.mkdtempSync(path.join(os.tmpdir(), 'torch-config-'));
    fs.mkdirSync(path.join(serviceDir, 'model'));
    fs.writeFileSync(path.join(serviceDir, 'model', 'model.pt'), 'x');
    fs.mkdirSync(path.join(serviceDir, 'model', 'dir.pt'));
    fs.writeFileSync(path.join(serviceDir, 'requirements.txt'), 'torch==2.13.0\n');
  });
  after(() => fs.rmSync(serviceDir, { recursive: true, force: true }));

  it('resolves every default from the model path alone', () => {
    const config = resolveConfig({ model: 'model/model.pt' }, serviceDir);
    assert.equal(config.model!.packagePath, 'model/model.pt');
    assert.equal(config.model!.loader, 'auto');
    assert.equal(config.requirementsPath, path.join(serviceDir, 'requirements.txt'));
    assert.equal(config.torchIndexUrl, DEFAULT_TORCH_INDEX_URL);
    assert.equal(config.indexUrl, null);
    assert.equal(config.python, 'python3');
    assert.deepEqual(config.strip, { keep: [], remove: [], symbols: true });
    assert.equal(config.allowUnsafeTorch, false);
    assert.equal(config.quantize, false);
    assert.equal(config.sampleInput, null);
  });

  it('takes quantize: dynamic with a sample input relative to the service', () => {
    fs.writeFileSync(path.join(serviceDir, 'model', 'input.json'), '[[1.0]]');
    const config = resolveConfig({ model: 'model/model.pt', quantize: 'dynamic', sampleInput: 'model/input.json' }, serviceDir);
    assert.equal(config.quantize, 'dynamic');
    assert.equal(config.sampleInput, path.join(serviceDir, 'model', 'input.json'));
    assert.equal(resolveConfig({ model: 'model/model.pt', quantize: false }, serviceDir).quantize, false);
  });

  it('takes the object form of the model', () => {
    const config = resolveConfig({ model: { path: 'model/model.pt', loader: 'state_dict', factory: 'net:build' } }, serviceDir);
    assert.equal(config.model!.loader, 'state_dict');
    assert.equal(config.model!.factory, 'net:build');
  });

  it('takes loader: weights, the weights-only load that auto picks when there is no factory', () => {
    assert.equal(resolveConfig({ model: { path: 'model/model.pt', loader: 'weights' } }, serviceDir).model!.loader, 'weights');
  });

  // Each mistake a user makes ends in one error whose message names the wrong value and the fix.
  const mistakes: [string, unknown, string, RegExp][] = [
    ['custom.torch not an object', 'model.pt', 'TORCH_CONFIG_INVALID', /"model\.pt"/],
    ['model file missing', { model: 'model/missing.pt' }, 'TORCH_MODEL_NOT_FOUND', /missing\.pt.*does not exist/],
    ['loader options of another loader', { model: { path: 'model/model.pt', loader: 'torchscript', class: 'AutoModel' } }, 'TORCH_CONFIG_INVALID', /sets class, which only the transformers loader reads/],
    ['custom loader without load', { model: { path: 'model/model.pt', loader: 'custom' } }, 'TORCH_MODEL_LOAD_REQUIRED', /load: "module:function"/],
    ['tokenizer not an Auto class name', { model: { path: 'model', loader: 'transformers', tokenizer: 'Auto Tokenizer' } }, 'TORCH_CONFIG_INVALID', /custom\.torch\.model\.tokenizer is "Auto Tokenizer"/],
    ['model outside the service', { model: '../elsewhere.pt' }, 'TORCH_MODEL_OUTSIDE_SERVICE', /elsewhere\.pt/],
    ['typo in an option', { model: 'model/model.pt', modle: 'x' }, 'TORCH_CONFIG_UNKNOWN_OPTION', /modle.*Did you mean "model"/],
    ['typo in a model option', { model: { path: 'model/model.pt', fatcory: 'a:b' } }, 'TORCH_CONFIG_UNKNOWN_OPTION', /fatcory.*"factory"/],
    ['unknown store', { model: { path: 'model/model.pt', store: 'S3' } }, 'TORCH_CONFIG_INVALID', /custom\.torch\.model\.store is "S3".*one of auto, package, s3/],
    ['unknown loader', { model: { path: 'model/model.pt', loader: 'onnx' } }, 'TORCH_CONFIG_INVALID', /"onnx".*auto, torchscript, weights, state_dict, pickle, safetensors, export, transformers, custom/],
    ['state_dict without factory', { model: { path: 'model/model.pt', loader: 'state_dict' } }, 'TORCH_MODEL_FACTORY_REQUIRED', /factory/],
    ['factory not module:function', { model: { path: 'model/model.pt', factory: 'net.build' } }, 'TORCH_CONFIG_INVALID', /"net\.build"/],
    ['torchVersion not a version', { model: 'model/model.pt', torchVersion: 'latest' }, 'TORCH_CONFIG_INVALID', /"latest"/],
    ['torchVersion a number', { model: 'model/model.pt', torchVersion: 2.13 }, 'TORCH_CONFIG_INVALID', /2\.13.*string/],
    ['index URL without scheme', { model: 'model/model.pt', torchIndexUrl: 'download.pytorch.org/whl/cpu' }, 'TORCH_CONFIG_INVALID', /download\.pytorch\.org\/whl\/cpu/],
    ['requirements file missing', { model: 'model/model.pt', requirements: 'reqs.txt' }, 'TORCH_REQUIREMENTS_NOT_FOUND', /reqs\.txt/],
    ['strip not an object', { model: 'model/model.pt', strip: true }, 'TORCH_CONFIG_INVALID', /strip/],
    ['strip.remove not a list', { model: 'model/model.pt', strip: { remove: 'torch/_inductor/**' } }, 'TORCH_CONFIG_INVALID', /strip\.remove/],
    ['typo in strip', { model: 'model/model.pt', strip: { kepp: [] } }, 'TORCH_CONFIG_UNKNOWN_OPTION', /"keep"/],
    ['allowUnsafeTorch not a boolean', { model: 'model/model.pt', allowUnsafeTorch: 'yes' }, 'TORCH_CONFIG_INVALID', /allowUnsafeTorch is "yes".*true or false/],
    ['quantize: true', { model: 'model/model.pt', quantize: true }, 'TORCH_CONFIG_INVALID', /quantize is true.*false or "dynamic"/],
    ['quantize: int8', { model: 'model/model.pt', quantize: 'int8' }, 'TORCH_CONFIG_INVALID', /"int8".*"dynamic"/],
    ['quantize: float16', { model: 'model/model.pt', quantize: 'float16' }, 'TORCH_QUANTIZE_FLOAT16_UNSUPPORTED', /does not shrink the saved model.*quantize: dynamic/],
    ['typo in quantize', { model: 'model/model.pt', quantise: 'dynamic' }, 'TORCH_CONFIG_UNKNOWN_OPTION', /Did you mean "quantize"/],
    ['sampleInput missing', { model: 'model/model.pt', quantize: 'dynamic', sampleInput: 'model/sample.json' }, 'TORCH_SAMPLE_INPUT_NOT_FOUND', /sample\.json.*not a file/],
    ['sampleInput a directory', { model: 'model/model.pt', quantize: 'dynamic', sampleInput: 'model' }, 'TORCH_SAMPLE_INPUT_NOT_FOUND', /"model"/],
    ['sampleInput not a string', { model: 'model/model.pt', sampleInput: [1, 2] }, 'TORCH_CONFIG_INVALID', /sampleInput is \[1,2\]/],
  ];
  for (const [label, raw, code, message] of mistakes) {
    it(`${label} is refused with ${code}`, () => {
      assert.throws(
        () => resolveConfig(raw, serviceDir),
        (error: unknown) => error instanceof TorchError && error.code === code && message.test(error.message),
      );
    });
  }

  describe('the model of each torch function', () => {
    const defaults = (raw: unknown) => resolveConfig(raw, serviceDir);

    it('is its own (functions.X.torch.model), the service default, or none (false)', () => {
      const config = defaults({ model: 'model/model.pt' });
      assert.equal(functionModel(undefined, 'predict', config)!.packagePath, 'model/model.pt');
      assert.equal(functionModel(true, 'predict', config)!.packagePath, 'model/model.pt');
      const own = functionModel({ model: { path: 'model', loader: 'custom', load: 'loaders:load' } }, 'embed', config)!;
      assert.deepEqual([own.packagePath, own.isDirectory, own.option], ['model', true, 'functions.embed.torch.model']);
      assert.equal(functionModel({ model: false }, 'tokenize', config), null);
      assert.equal(functionModel(undefined, 'tokenize', defaults({ model: false })), null);
    });

    it('is required: without custom.torch the error shows how to add it', () => {
      assert.throws(() => functionModel(undefined, 'predict', defaults(undefined)), { code: 'TORCH_CONFIG_MISSING', message: /"predict" uses torch but has no model.*model: model\/model\.pt/s });
      assert.throws(() => functionModel(undefined, 'predict', defaults({})), { code: 'TORCH_MODEL_NOT_SET', message: /functions\.predict\.torch\.model/ });
    });

    it('names the function in its mistakes', () => {
      assert.throws(() => functionModel({ model: 'model/missing.pt' }, 'embed', defaults({})), { code: 'TORCH_MODEL_NOT_FOUND', message: /functions\.embed\.torch\.model is "model\/missing\.pt"/ });
      assert.throws(() => functionModel({ modle: 'x' }, 'embed', defaults({})), { code: 'TORCH_CONFIG_UNKNOWN_OPTION', message: /functions\.embed\.torch\.modle.*"model"/ });
      assert.throws(() => functionModel('yes', 'embed', defaults({})), { code: 'TORCH_CONFIG_INVALID', message: /functions\.embed\.torch is "yes".*true, false or \{ model \}/ });
    });
  });
});
