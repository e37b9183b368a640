/**
 * Room for the model: packages the example's shape with a TorchScript model of about --mb MB
 * (random weights, a 64 → W → W → W → 384 MLP sized to match), through the real CLI against the
 * local wheel index (torch 2.13.0, python3.11 x86_64), and runs it once with `sls invoke local`.
 * Prints whether it fits, the level the plan chose, the sizes, and the init line. Run by hand:
 *
 *   npm run build && node dist/bench/model-room.js --mb 140 [--mb 160 ...] [--cache DIR] [--keep]
 *
 * --cache keeps the plugin cache between runs (the dependency tree is then built once); --keep
 * leaves the packaged services, for `node dist/bench/cold-start.js --service DIR --variants ours,floor`.
 */
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { runWithTorch } from '../test/support/host-torch';
import { makeService, runSls, serviceYaml } from '../test/support/sls';
import { prepareFixtureWheels, startWheelIndex } from '../test/support/wheel-index';

const HANDLER = 'import torch\n\ndef predict(event, context, model):\n    with torch.no_grad():\n        return {"output": model(torch.tensor(event["inputs"])).sum().item()}\n';

function argumentsOf(name: string): string[] {
  return process.argv.flatMap((arg, index) => (arg === `--${name}` ? [process.argv[index + 1]] : []));
}

/** A TorchScript MLP of about `megabytes` MB of float32 weights, written to dir/model.pt. */
async function makeModel(dir: string, megabytes: number): Promise<number> {
  // Parameters: 64W + 2W² + 384W (+ biases) = bytes / 4; solved for W.
  const parameters = (megabytes * 1e6) / 4;
  const width = Math.round((-448 + Math.sqrt(448 * 448 + 8 * parameters)) / 4);
  await runWithTorch(
    `import torch
torch.manual_seed(0)
W = ${width}
net = torch.nn.Sequential(torch.nn.Linear(64, W), torch.nn.ReLU(), torch.nn.Linear(W, W), torch.nn.ReLU(),
                          torch.nn.Linear(W, W), torch.nn.ReLU(), torch.nn.Linear(W, 384)).eval()
torch.jit.save(torch.jit.script(net), "model.pt")
`,
    dir,
  );
  return fs.statSync(path.join(dir, 'model.pt')).size;
}

async function main(): Promise<void> {
  const sizes = argumentsOf('mb').map(Number);
  if (!sizes.length || sizes.some((size) => !(size > 0))) throw new Error('give the model size with --mb N (more than once to try several)');
  const cacheDir = argumentsOf('cache')[0] ?? fs.mkdtempSync(path.join(os.tmpdir(), 'bench-model-room-cache-'));
  const wheels = await prepareFixtureWheels();
  const index = await startWheelIndex({ torchWheels: [wheels.torchWheelRetagged], otherWheels: wheels.dependencyWheels });
  try {
    for (const megabytes of sizes) {
      const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'bench-model-'));
      const bytes = await makeModel(dir, megabytes);
      const yaml = serviceYaml({
        torchIndexUrl: index.torchUrl,
        indexUrl: index.simpleUrl,
        model: '{ path: model/model.pt, loader: torchscript }',
        functions: '  predict:\n    handler: handler.predict',
      }).replace(/cacheDir: .*/, `cacheDir: ${cacheDir}`);
      const service = makeService({ files: { 'serverless.yml': yaml, 'handler.py': HANDLER, 'model/model.pt': fs.readFileSync(path.join(dir, 'model.pt')) } });
      try {
        const started = Date.now();
        const packaged = await runSls('serverless', ['package', '--verbose'], service);
        const output = packaged.stdout + packaged.stderr;
        const seconds = ((Date.now() - started) / 1000).toFixed(0);
        if (packaged.code !== 0) {
          console.log(`${bytes} bytes of model: refused after ${seconds} s: ${(/\[TORCH_[A-Z_]+\][^\n]*/.exec(output) ?? [output.slice(-2000)])[0]}`);
          continue;
        }
        const choice = /Compressed with zstd level -?\d+[^\n]*/.exec(output)?.[0] ?? 'nothing compressed';
        const total = /total \/ limit [^\n]*/.exec(output)?.[0] ?? '';
        fs.writeFileSync(path.join(service, 'event.json'), JSON.stringify({ inputs: [Array.from({ length: 64 }, (_, i) => i / 64)] }));
        const invoked = await runSls('serverless', ['invoke', 'local', '-f', 'predict', '-p', path.join(service, 'event.json')], service);
        const init = /serverless-torch init:[^\n]*/.exec(invoked.stdout + invoked.stderr)?.[0] ?? (invoked.stdout + invoked.stderr).slice(-1500);
        console.log(`${bytes} bytes of model: packaged in ${seconds} s; ${total.trim()}\n  ${choice}\n  invoke local exit ${invoked.code}: ${init}`);
      } finally {
        if (process.argv.includes('--keep')) console.log(`  service kept in ${service}`);
        else fs.rmSync(service, { recursive: true, force: true });
        fs.rmSync(dir, { recursive: true, force: true });
      }
    }
  } finally {
    await index.close();
  }
}

main().catch((error) => {
  console.error(error);
  process.exit(1);
});
