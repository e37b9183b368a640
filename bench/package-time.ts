/**
 * How long `sls package` takes on the example service, cold (empty plugin cache) and warm,
 * and what it produces. Run by hand, not a test:
 *
 *   npm run build && node dist/bench/package-time.js [--runs 3] [--cli serverless|osls]
 *
 * Serves torch 2.13.0 (python3.11 x86_64) from the local fixture index, as the tests do.
 */
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { Cli, makeService, runSls, serviceYaml } from '../test/support/sls';
import { prepareFixtureWheels, startWheelIndex } from '../test/support/wheel-index';

function argument(name: string, fallback: string): string {
  const index = process.argv.indexOf(`--${name}`);
  return index >= 0 ? process.argv[index + 1] : fallback;
}

function median(values: number[]): number {
  const sorted = [...values].sort((a, b) => a - b);
  return sorted[Math.floor(sorted.length / 2)];
}

async function timePackage(cli: Cli, service: string): Promise<number> {
  const started = process.hrtime.bigint();
  const result = await runSls(cli, ['package'], service);
  if (result.code !== 0) throw new Error(`sls package failed:\n${result.stdout}\n${result.stderr}`);
  return Number(process.hrtime.bigint() - started) / 1e9;
}

async function main(): Promise<void> {
  const runs = Number(argument('runs', '3'));
  const cli = argument('cli', 'serverless') as Cli;
  const wheels = await prepareFixtureWheels();
  const index = await startWheelIndex({ torchWheels: [wheels.torchWheelRetagged], otherWheels: wheels.dependencyWheels });
  const cold: number[] = [];
  const warm: number[] = [];
  try {
    for (let run = 0; run < runs; run++) {
      const cacheDir = fs.mkdtempSync(path.join(os.tmpdir(), 'bench-package-cache-'));
      const yaml = serviceYaml({ torchIndexUrl: index.torchUrl, indexUrl: index.simpleUrl }).replace(/cacheDir: .*/, `cacheDir: ${cacheDir}`);
      const service = makeService({ files: { 'serverless.yml': yaml } });
      try {
        cold.push(await timePackage(cli, service));
        warm.push(await timePackage(cli, service));
        if (run === 0) {
          const sizes = fs
            .readdirSync(path.join(service, '.serverless'))
            .filter((file) => file.endsWith('.zip'))
            .map((file) => `${file} ${fs.statSync(path.join(service, '.serverless', file)).size} bytes`);
          console.log(`artifacts: ${sizes.join(', ')}`);
        }
      } finally {
        fs.rmSync(service, { recursive: true, force: true });
        fs.rmSync(cacheDir, { recursive: true, force: true });
      }
      console.log(`run ${run + 1}: cold ${cold[run].toFixed(1)} s, warm ${warm[run].toFixed(1)} s`);
    }
  } finally {
    await index.close();
  }
  console.log(`${cli} package, median of ${runs}: cold ${median(cold).toFixed(1)} s, warm ${median(warm).toFixed(1)} s (warm/cold ${(median(warm) / median(cold)).toFixed(2)})`);
}

main().catch((error) => {
  console.error(error);
  process.exit(1);
});
