// Cold start of a 400 MB model stored in S3, in the Lambda-like layout `invoke local` builds
// (layers in /opt, compressed dependencies unpacked into its /tmp, the real shim and fetch.py),
// against s3rver on 127.0.0.1; side by side with the same init when the verified model is in
// /tmp already (a second init in a sandbox, or the floor for a model that had no download).
//
//   npm run bench:s3-cold-start -- --runs 5
//
// Options: --runs N (default 5), --mib N (model size, default 381.5: Linear(10000, 10000)),
// --json FILE (every timing). The service is made and packaged once (torch 2.13 from the local
// wheel store, `store: auto` puts the model in S3), the object put into s3rver, then the two
// variants run interleaved, in rotating order, after one untimed warm-up each. Each run is a
// fresh `serverless invoke local`, whose init prints its phases: the figures are the shim's own
// (unpack, import torch, model load including any wait for the download, and the download
// itself, which runs in the background of the unpack and the import). Loopback has no network to
// wait for, and two shared cores: the download here is bound by CPU, not by Lambda's network.
import { PutObjectCommand, S3Client } from '@aws-sdk/client-s3';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { runWithTorch } from '../test/support/host-torch';
import { S3RVER_ACCESS_KEY_ID, S3RVER_REGION, S3RVER_SECRET_ACCESS_KEY, startS3Server } from '../test/support/s3-server';
import { makeService, runSls, serviceYaml } from '../test/support/sls';
import { prepareFixtureWheels, prepareStoreWheels, startWheelIndex } from '../test/support/wheel-index';

const BUCKET = 'bench-deployment-bucket';
const VARIANTS = ['from S3', 'verified in /tmp'] as const;
type Variant = (typeof VARIANTS)[number];

interface Sample {
  variant: Variant;
  unpack: number;
  import: number;
  load: number;
  /** The download's own time (client creation included), or 0 when the file was reused. */
  download: number;
  init: number;
}

function parseOptions(argv: string[]): { runs: number; features: number; json: string | null } {
  const options = { runs: 5, features: 10000, json: null as string | null };
  for (let i = 0; i < argv.length; i += 2) {
    const value = argv[i + 1];
    switch (argv[i]) {
      case '--runs': options.runs = Number(value); break;
      // n x n float32 weights (+ n of bias): the model's size in MiB is about 4 n² / 2^20.
      case '--mib': options.features = Math.round(Math.sqrt((Number(value) * 2 ** 20) / 4)); break;
      case '--json': options.json = value; break;
      default: throw new Error(`unknown option ${argv[i]} (see the comment at the top of bench/s3-cold-start.ts)`);
    }
  }
  return options;
}

const HANDLER = (features: number) => `import torch


def predict(event, context, model):
    with torch.no_grad():
        return {"sum": float(model(torch.ones(1, ${features})).sum())}
`;

/** The init line the shim prints: "unpack X s (...) | import torch X s | model load X s (...) | model from S3 X s (...)". */
function parseInit(variant: Variant, output: string): Sample {
  const line = output.split('\n').find((text) => text.includes('serverless-torch init:'));
  if (!line) throw new Error(`no init line in:\n${output}`);
  const seconds = (pattern: RegExp) => Number(pattern.exec(line)?.[1] ?? 0);
  const sample = {
    variant,
    unpack: seconds(/unpack ([\d.]+) s/),
    import: seconds(/import torch ([\d.]+) s/),
    load: seconds(/model load ([\d.]+) s/),
    download: seconds(/model from S3 ([\d.]+) s/),
  };
  if (variant === 'verified in /tmp' && !/model from S3 reused/.test(line)) throw new Error(`the model was not reused:\n${line}`);
  if (variant === 'from S3' && !sample.download) throw new Error(`the model was not downloaded:\n${line}`);
  return { ...sample, init: sample.unpack + sample.import + sample.load };
}

const median = (values: number[]) => {
  const sorted = [...values].sort((a, b) => a - b);
  const middle = sorted.length >> 1;
  return sorted.length % 2 ? sorted[middle] : (sorted[middle - 1] + sorted[middle]) / 2;
};

async function main(): Promise<void> {
  const options = parseOptions(process.argv.slice(2));
  const wheels = await prepareFixtureWheels();
  const boto3 = await prepareStoreWheels('boto3-cp311-v1', ['boto3']);
  const byName = new Map([...wheels.dependencyWheels, ...boto3].map((wheel) => [path.basename(wheel), wheel]));
  const index = await startWheelIndex({ torchWheels: [wheels.torchWheelRetagged], otherWheels: [...byName.values()] });
  const s3 = await startS3Server({ bucket: BUCKET });
  const service = makeService({
    files: {
      'big.py': HANDLER(options.features),
      'serverless.yml': serviceYaml({ torchIndexUrl: index.torchUrl, indexUrl: index.simpleUrl, model: '{ path: model/big.pt, store: s3 }', functions: '  predict:\n    handler: big.predict' }),
    },
  });
  try {
    process.stderr.write(`Making a TorchScript Linear(${options.features}, ${options.features}) and packaging the service...\n`);
    await runWithTorch(`import torch\ntorch.jit.save(torch.jit.script(torch.nn.Linear(${options.features}, ${options.features}).eval()), "model/big.pt")\n`, service);
    const packaged = await runSls('serverless', ['package'], service);
    if (packaged.code !== 0) throw new Error(`sls package failed:\n${packaged.stdout}\n${packaged.stderr}`);
    const packageDir = path.join(service, '.serverless');
    const [object] = JSON.parse(fs.readFileSync(path.join(packageDir, 'serverless-torch-models.json'), 'utf8'));
    // A Buffer, not a stream: the SDK sends a stream as aws-chunked with a trailing checksum, which
    // s3rver stores verbatim (chunk headers included), so the object would not be the model's bytes.
    const client = new S3Client({ endpoint: s3.endpoint, forcePathStyle: true, region: S3RVER_REGION, credentials: { accessKeyId: S3RVER_ACCESS_KEY_ID, secretAccessKey: S3RVER_SECRET_ACCESS_KEY } });
    await client.send(new PutObjectCommand({ Bucket: BUCKET, Key: object.key, Body: fs.readFileSync(path.join(packageDir, object.file)), ContentLength: object.size }));
    client.destroy();

    const run = async (variant: Variant): Promise<Sample> => {
      const args = ['invoke', 'local', '-f', 'predict', '-d', '{}', ...(variant === 'from S3' ? ['--torch-model-from-s3'] : [])];
      const result = await runSls('serverless', args, service, { ...s3.env, SERVERLESS_TORCH_MODEL_BUCKET: BUCKET });
      if (result.code !== 0) throw new Error(`invoke local (${variant}) failed:\n${result.stdout}\n${result.stderr}`);
      return parseInit(variant, result.stdout + result.stderr);
    };
    for (const variant of VARIANTS) await run(variant);
    const samples: Sample[] = [];
    for (let i = 0; i < options.runs; i++) {
      for (let j = 0; j < VARIANTS.length; j++) {
        const sample = await run(VARIANTS[(i + j) % VARIANTS.length]);
        samples.push(sample);
        process.stderr.write(`run ${i + 1}/${options.runs} ${sample.variant}: init ${sample.init.toFixed(2)} s\n`);
      }
    }
    report(samples, object.size, options.runs);
    if (options.json) fs.writeFileSync(options.json, JSON.stringify(samples, null, 2));
  } finally {
    await index.close();
    await s3.close();
    fs.rmSync(service, { recursive: true, force: true });
  }
}

function report(samples: Sample[], bytes: number, runs: number): void {
  const of = (variant: Variant, phase: keyof Omit<Sample, 'variant'>) => median(samples.filter((sample) => sample.variant === variant).map((sample) => sample[phase]));
  const mib = bytes / 2 ** 20;
  console.log(`model ${mib.toFixed(1)} MiB in S3; medians of ${runs} runs, seconds`);
  console.log('variant               unpack   import   load     init     download');
  for (const variant of VARIANTS) {
    const cells = (['unpack', 'import', 'load', 'init', 'download'] as const).map((phase) => of(variant, phase).toFixed(2).padEnd(9));
    console.log(`${variant.padEnd(22)}${cells.join('')}`);
  }
  const ratio = of('from S3', 'init') / of('verified in /tmp', 'init');
  console.log(`init from S3 / init with the model in /tmp: ${ratio.toFixed(2)}`);
  console.log(`download: ${(mib / of('from S3', 'download')).toFixed(0)} MiB/s (client creation included), in the background of unpack + import`);
}

main().catch((error) => {
  console.error(error);
  process.exit(1);
});
