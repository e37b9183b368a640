import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as net from 'node:net';
import * as os from 'node:os';
import * as path from 'node:path';
import { writeZip } from '../../lib/zip/write';
import { runWithTorch } from '../support/host-torch';
import { Fault, WheelIndex, prepareFixtureWheels, startWheelIndex } from '../support/wheel-index';
import { TEST_CACHE, makeService, runSls, serviceYaml } from '../support/sls';

/** What a row may use: the running index and a port nothing listens on. */
interface Context {
  index: WheelIndex;
  closedPort: number;
  sympyWheel: string;
}

type YamlOptions = Parameters<typeof serviceYaml>[0];

interface BadInput {
  name: string;
  /** serverless.yml options beyond the local indexes. */
  yaml?: (context: Context) => Partial<YamlOptions>;
  /** Files written over the copied example service. */
  files?: Record<string, string>;
  /** Work on the service directory before the CLI runs (big or binary files). */
  prepare?: (service: string) => Promise<void> | void;
  /** Faults the index serves while this row runs. */
  faults?: (context: Context) => Record<string, Fault>;
  /** @default ['package'] */
  command?: string[];
  /**
   * Rows whose mistake is only found by pip get a cache of their own: a tree another row built
   * under the same key would let the run skip pip and never see the fault.
   */
  cold?: boolean;
  /** Milliseconds, for rows slower than mocha's default. */
  timeout?: number;
  code: string;
  message: RegExp;
}

const FOUR_LAYERS = [1, 2, 3, 4].map((n) => `      - arn:aws:lambda:us-east-1:123456789012:layer:user-layer-${n}:1`).join('\n');

// Each row is one mistake a user makes; each must end in exactly one error that names the wrong
// value and the fix, with nothing left in .serverless/ that a deploy would pick up.
const BAD_INPUTS: BadInput[] = [
  {
    name: 'a typo in an option name',
    yaml: () => ({ extraCustom: '    torchVerison: "2.13.0"' }),
    code: 'TORCH_CONFIG_UNKNOWN_OPTION',
    message: /custom\.torch\.torchVerison is not an option of serverless-torch\. Did you mean "torchVersion"\?/,
  },
  {
    name: 'a version written as a YAML number',
    yaml: () => ({ extraCustom: '    torchVersion: 2.10' }),
    code: 'TORCH_CONFIG_INVALID',
    message: /custom\.torch\.torchVersion is 2\.1, a YAML number \(an unquoted 2\.10 reads as 2\.1\), but it must be a string: quote it/,
  },
  {
    name: 'a function flag that is not a boolean',
    yaml: () => ({ functions: '  predict:\n    handler: handler.predict\n    torch: yes' }),
    code: 'TORCH_CONFIG_INVALID',
    message: /functions\.predict\.torch is "yes", but it must be true, false or \{ model \}/,
  },
  {
    name: 'torch: true on a Node.js function',
    yaml: () => ({ functions: '  predict:\n    handler: handler.predict\n  web:\n    handler: web.main\n    runtime: nodejs20.x\n    torch: true' }),
    files: { 'web.js': 'exports.main = async () => ({});\n' },
    code: 'TORCH_UNSUPPORTED_RUNTIME',
    message: /functions\.web sets "torch", but its runtime nodejs20\.x is not Python.*python3\.9.*remove its "torch"/,
  },
  {
    name: 'a requirements file that does not exist',
    yaml: () => ({ extraCustom: '    requirements: requirements-prod.txt' }),
    code: 'TORCH_REQUIREMENTS_NOT_FOUND',
    message: /custom\.torch\.requirements is "requirements-prod\.txt", but .*requirements-prod\.txt does not exist/,
  },
  {
    name: 'a handler module that is not in the package',
    yaml: () => ({ functions: '  predict:\n    handler: src/handler.predict' }),
    code: 'TORCH_HANDLER_NOT_FOUND',
    message: /Function "predict" has handler "src\/handler\.predict", but src\/handler\.py is not in the package\. Check the handler path/,
  },
  {
    name: 'a model factory module that is not in the package',
    yaml: () => ({ model: '{ path: model/model.pt, loader: state_dict, factory: "nets:build" }' }),
    code: 'TORCH_MODEL_FACTORY_NOT_FOUND',
    message: /the factory of model\/model\.pt is "nets:build", but nets\.py is not in the function package/,
  },
  {
    name: 'a model in a format torch did not write (ONNX)',
    yaml: () => ({ model: 'model/model.onnx' }),
    prepare: (service) => fs.writeFileSync(path.join(service, 'model', 'model.onnx'), Buffer.from('080712076f6e6e782e6a73', 'hex')),
    code: 'TORCH_MODEL_UNKNOWN_FORMAT',
    message: /custom\.torch\.model model\/model\.onnx is not a model file torch or safetensors wrote \(it starts with 0x08071207\)\. Save the model with torch\.save/,
  },
  {
    name: 'a model directory with a loader that reads one file',
    yaml: () => ({ model: '{ path: model, loader: torchscript }' }),
    code: 'TORCH_MODEL_DIRECTORY_LOADER',
    message: /custom\.torch\.model model\/ is a directory, which the torchscript loader cannot read .*loader: transformers.*loader: custom/,
  },
  {
    name: 'a torch.export program (.pt2) with a torch that has no torch.export',
    yaml: () => ({ model: 'model/program.pt2' }),
    files: { 'requirements.txt': 'torch==2.0.1\n' },
    prepare: async (service) => {
      await writeZip(path.join(service, 'model', 'program.pt2'), [{ name: 'program/archive_format', source: { data: Buffer.from('pt2') } }]);
    },
    code: 'TORCH_EXPORT_UNSUPPORTED',
    message: /model\/program\.pt2 is a torch\.export program, but the functions run torch 2\.0\.1, which has no torch\.export\.load \(torch 2\.1\.0 and later\)/,
  },
  {
    name: 'a Hugging Face model without transformers in the requirements',
    yaml: () => ({ model: '{ path: model/minilm, class: AutoModelForSequenceClassification }' }),
    files: { 'model/minilm/config.json': '{"model_type": "bert"}' },
    code: 'TORCH_MODEL_NEEDS_REQUIREMENT',
    message: /model\/minilm is loaded with the transformers loader, but the requirements do not name transformers\. Add a line such as "transformers==/,
  },
  {
    name: 'a custom load function the module does not define',
    yaml: () => ({ model: '{ path: model/model.pt, loader: custom, load: "net:load_it" }' }),
    code: 'TORCH_MODEL_FACTORY_NOT_FOUND',
    message: /the load function of model\/model\.pt is "net:load_it", but net\.py defines no load_it/,
  },
  {
    name: 'a handler that takes only the event',
    yaml: () => ({ functions: '  predict:\n    handler: lone.predict' }),
    files: { 'lone.py': 'def predict(event):\n    return 1\n' },
    code: 'TORCH_HANDLER_SIGNATURE',
    message: /Function "predict" has handler "lone\.predict", whose predict\(\) takes 1 argument, but Lambda calls a handler with the event and the context/,
  },
  {
    name: 'a pickled nn.Module with the default loader',
    yaml: () => ({ model: 'model/module.pt' }),
    prepare: async (service) => {
      await runWithTorch('import torch, net\ntorch.save(net.build(), "model/module.pt")', service);
    },
    code: 'TORCH_MODEL_NEEDS_PICKLE_LOADER',
    message: /custom\.torch\.model model\/module\.pt is a pickled module \(it names net\.DigitsMLP.*set loader: state_dict with a factory/,
  },
  {
    name: 'a model so large that no layer plan can fit it',
    yaml: () => ({ model: '{ path: model/huge.pt, loader: custom, load: "net:build", store: package }' }),
    prepare: (service) => sparseModel(path.join(service, 'model', 'huge.pt'), 270_000_000),
    code: 'TORCH_PACKAGE_TOO_LARGE',
    message: /Function "predict" is 270,\d{3},\d{3} bytes unzipped before any dependency \(models 270,000,000\), over Lambda's limit of 262,144,000 bytes for code plus layers\. Let the model travel in S3 \(model store: auto or s3\), shrink the model/,
  },
  {
    name: 'a torch version the index does not have',
    cold: true,
    files: { 'requirements.txt': 'torch==2.99.0\n' },
    code: 'TORCH_VERSION_NOT_FOUND',
    message: /http:\/\/127\.0\.0\.1:\d+\/whl\/cpu\/ has no torch==2\.99\.0\. Newest versions there: 2\.13\.0\+cpu\. Change the torch pin/,
  },
  {
    name: 'an architecture the index has no torch for',
    cold: true,
    yaml: () => ({ architecture: 'arm64' }),
    code: 'TORCH_NO_WHEEL_FOR_ARCHITECTURE',
    message: /torch==2\.13\.0 has no aarch64 wheel for python3\.11 on http:\/\/127\.0\.0\.1:\d+\/whl\/cpu\/\. Use architecture x86_64/,
  },
  {
    name: 'a requirements line pip cannot parse',
    cold: true,
    files: { 'requirements.txt': 'torch==2.13.0\n# symbolic maths\nsympy=1.14.0\n' },
    code: 'TORCH_REQUIREMENTS_INVALID',
    message: /requirements\.txt line 3: "sympy=1\.14\.0" is not a valid requirement \(pip: = is not a valid operator\. Did you mean == \?\)\. Fix that line/,
  },
  {
    name: 'a torch index nothing listens on',
    cold: true,
    yaml: ({ closedPort }) => ({ torchIndexUrl: `http://127.0.0.1:${closedPort}/whl/cpu/` }),
    code: 'TORCH_INDEX_UNREACHABLE',
    message: /pip could not reach http:\/\/127\.0\.0\.1:\d+\/whl\/cpu\/ to download torch: \[Errno 111\] Connection refused\. .*custom\.torch\.torchIndexUrl/,
  },
  {
    name: 'a torch index that answers 404 for torch',
    cold: true,
    faults: () => ({ '/whl/cpu/torch/': 404 }),
    code: 'TORCH_NOT_ON_INDEX',
    message: /http:\/\/127\.0\.0\.1:\d+\/whl\/cpu\/ has no page for torch: http:\/\/127\.0\.0\.1:\d+\/whl\/cpu\/torch\/ answered 404 Not Found\. Check custom\.torch\.torchIndexUrl/,
  },
  {
    name: 'a torch index that answers garbage for torch',
    cold: true,
    faults: () => ({ '/whl/cpu/torch/': 'garbage' }),
    code: 'TORCH_INDEX_INVALID',
    message: /http:\/\/127\.0\.0\.1:\d+\/whl\/cpu\/torch\/ is not a package index page: it answered 512 bytes of text\/html without a single link.*Check custom\.torch\.torchIndexUrl/,
  },
  {
    name: 'a torch wheel whose bytes are not what the index says',
    cold: true,
    faults: ({ index }) => ({ [index.pathOf('torch-2.13.0+cpu-cp311-cp311-manylinux_2_17_x86_64.manylinux2014_x86_64.whl')]: 'garbage' }),
    code: 'TORCH_WHEEL_HASH_MISMATCH',
    message: /pip refused torch-2\.13\.0\+cpu-cp311-cp311-manylinux_2_17_x86_64\.manylinux2014_x86_64\.whl from http:\/\/127\.0\.0\.1:\d+\/whl\/cpu\/\S+ \(asked to download torch\): expected sha256 [0-9a-f]{64}, got [0-9a-f]{64}\. .*fix the index or the pin/,
  },
  {
    name: 'a dependency wheel whose hash does not match the index',
    cold: true,
    faults: ({ index, sympyWheel }) => ({ [index.pathOf(sympyWheel)]: 'wrong-hash' }),
    code: 'TORCH_WHEEL_HASH_MISMATCH',
    message: /pip refused sympy-1\.14\.0-py3-none-any\.whl from http:\/\/127\.0\.0\.1:\d+\/simple\/\S+ \(asked to install the requirements\): expected sha256 [0-9a-f]{64}, got [0-9a-f]{64}\./,
  },
  {
    name: 'four layers of the user\'s own on the function',
    yaml: () => ({ functions: `  predict:\n    handler: handler.predict\n    layers:\n${FOUR_LAYERS}` }),
    code: 'TORCH_TOO_MANY_LAYERS',
    message: /Function "predict" already has 4 layers; serverless-torch needs 2 more and Lambda allows 5 in all\. Remove 1 of its layers/,
  },
  {
    name: 'a model that leaves the dependencies too little room',
    yaml: () => ({ model: '{ path: model/big.pt, loader: custom, load: "net:build", store: package }' }),
    prepare: (service) => sparseModel(path.join(service, 'model', 'big.pt'), 200_000_000),
    // The refusal rests on measured sizes: every dependency is compressed at each zstd level,
    // up to 19, which takes minutes on two shared cores.
    timeout: 1_500_000,
    code: 'TORCH_PACKAGE_TOO_LARGE',
    message: /Function "predict" has a 190\.\d MiB package of its own \(models 190\.7 MiB\), which leaves torch too little room\. The function does not fit Lambda's 250\.0 MiB .*even with every dependency compressed: .*measured at \d+\.\d MiB compressed with zstd level 19, plus \d\.\d MiB that must stay uncompressed \(the zstd decoder\).*shrink the model.*can travel in S3: set the model's store to auto or s3\./s,
  },
];

/**
 * A model file of `bytes` that takes no disk: a pickle protocol header, then a hole. The tests
 * load it with a custom loader, which the plugin never reads the file for, so only its size counts.
 */
function sparseModel(file: string, bytes: number): void {
  const fd = fs.openSync(file, 'w');
  try {
    fs.writeSync(fd, Buffer.from([0x80, 0x02]));
    fs.ftruncateSync(fd, bytes);
  } finally {
    fs.closeSync(fd);
  }
}

function closedPort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = net.createServer();
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => {
      const { port } = server.address() as net.AddressInfo;
      server.close(() => resolve(port));
    });
  });
}

describe('bad input through the real CLI: one clear error, nothing left to deploy', function () {
  let context: Context;

  before(async () => {
    const wheels = await prepareFixtureWheels();
    const index = await startWheelIndex({ torchWheels: [wheels.torchWheelRetagged], otherWheels: wheels.dependencyWheels });
    const sympyWheel = wheels.dependencyWheels.find((wheel) => path.basename(wheel).startsWith('sympy-'))!;
    context = { index, closedPort: await closedPort(), sympyWheel };
  });

  after(async () => {
    await context?.index.close();
  });

  for (const row of BAD_INPUTS) {
    it(`${row.name} ends in [${row.code}]`, async function () {
      if (row.timeout) this.timeout(row.timeout);
      const cacheDir = row.cold ? fs.mkdtempSync(path.join(os.tmpdir(), 'serverless-torch-cold-cache-')) : TEST_CACHE;
      const yaml = serviceYaml({ torchIndexUrl: context.index.torchUrl, indexUrl: context.index.simpleUrl, ...row.yaml?.(context) })
        .replace(`cacheDir: ${TEST_CACHE}`, `cacheDir: ${cacheDir}`);
      const service = makeService({ files: { 'serverless.yml': yaml, ...row.files } });
      const faults = row.faults?.(context) ?? {};
      Object.assign(context.index.faults, faults);
      try {
        await row.prepare?.(service);
        const result = await runSls('serverless', row.command ?? ['package'], service);
        const output = `${result.stdout}\n${result.stderr}`;
        assert.notEqual(result.code, 0, `the CLI succeeded:\n${output}`);
        const codes = [...output.matchAll(/\[(TORCH_[A-Z_]+)\]/g)].map((match) => match[1]);
        assert.deepEqual(codes, [row.code], `expected exactly one [${row.code}]:\n${output}`);
        assert.match(output, row.message);
        assert.doesNotMatch(output, /at .*\.js:\d+:\d+/, 'a stack trace was printed without --verbose');
        const serverlessDir = path.join(service, '.serverless');
        const left = fs.existsSync(serverlessDir) ? fs.readdirSync(serverlessDir) : [];
        assert.deepEqual(left.filter((file) => file.endsWith('.zip') || file === 'serverless-state.json' || file.startsWith('.torch-staging')), []);
        process.stdout.write(`        ${row.code}: ${output.slice(output.indexOf(`[${row.code}]`)).split('\n')[0]}\n`);
      } finally {
        for (const key of Object.keys(faults)) delete context.index.faults[key];
        fs.rmSync(service, { recursive: true, force: true });
        if (cacheDir !== TEST_CACHE) fs.rmSync(cacheDir, { recursive: true, force: true });
      }
    });
  }
});
