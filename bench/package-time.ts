/**
 * How long `sls package` takes on the example service, cold (empty plugin cache) and warm,
 * its peak memory, and what it produces. Run by hand, not a test:
 *
 *   npm run build && node dist/bench/package-time.js [--runs 3] [--cli serverless|osls]
 *
 * Serves torch 2.13.0 (python3.11 x86_64) from the local fixture index, as the tests do. Peak
 * RSS: the CLI's own process (the framework and the plugin, VmHWM), and the largest sum over its
 * process group (pip, strip, the compressor) sampled every 50 ms. The plugin's own share of the
 * time comes from its --verbose line; each run also packages the same service without the plugin
 * (the framework alone: what no plugin can make faster).
 */
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { Cli, makeService, serviceYaml, startSls } from '../test/support/sls';
import { prepareFixtureWheels, startWheelIndex } from '../test/support/wheel-index';

function argument(name: string, fallback: string): string {
  const index = process.argv.indexOf(`--${name}`);
  return index >= 0 ? process.argv[index + 1] : fallback;
}

function median(values: number[]): number {
  const sorted = [...values].sort((a, b) => a - b);
  return sorted[Math.floor(sorted.length / 2)];
}

interface Measured {
  seconds: number;
  /** The plugin's hook, from its --verbose line; null without the plugin. */
  pluginSeconds: number | null;
  /** Peak RSS of the CLI's process, bytes. */
  cliPeak: number;
  /** Largest RSS of the CLI and its children together, bytes. */
  groupPeak: number;
}

function statusKb(pid: number, field: string): number {
  try {
    const status = fs.readFileSync(`/proc/${pid}/status`, 'utf8');
    return Number(new RegExp(`^${field}:\\s+(\\d+) kB`, 'm').exec(status)?.[1] ?? 0);
  } catch {
    return 0;
  }
}

/** Processes in the process group `group` (the CLI runs as a group leader, with pip and python inside). */
function groupMembers(group: number): number[] {
  const members: number[] = [];
  for (const name of fs.readdirSync('/proc')) {
    if (!/^\d+$/.test(name)) continue;
    try {
      const stat = fs.readFileSync(`/proc/${name}/stat`, 'utf8');
      const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
      if (Number(fields[2]) === group) members.push(Number(name));
    } catch {
      // exited meanwhile
    }
  }
  return members;
}

async function timePackage(cli: Cli, service: string): Promise<Measured> {
  const started = process.hrtime.bigint();
  const run = startSls(cli, ['package', '--verbose'], service);
  let cliPeak = 0;
  let groupPeak = 0;
  const sampler = setInterval(() => {
    cliPeak = Math.max(cliPeak, statusKb(run.pid, 'VmHWM'));
    groupPeak = Math.max(groupPeak, groupMembers(run.pid).reduce((sum, pid) => sum + statusKb(pid, 'VmRSS'), 0));
  }, 50);
  const result = await run.result.finally(() => clearInterval(sampler));
  if (result.code !== 0) throw new Error(`sls package failed:\n${result.stdout}\n${result.stderr}`);
  const plugin = /serverless-torch took ([\d.]+) s/.exec(result.stdout + result.stderr);
  return {
    seconds: Number(process.hrtime.bigint() - started) / 1e9,
    pluginSeconds: plugin ? Number(plugin[1]) : null,
    cliPeak: cliPeak * 1024,
    groupPeak: groupPeak * 1024,
  };
}

const mb = (bytes: number) => `${(bytes / 1e6).toFixed(0)} MB`;

async function main(): Promise<void> {
  const runs = Number(argument('runs', '3'));
  const cli = argument('cli', 'serverless') as Cli;
  const wheels = await prepareFixtureWheels();
  const index = await startWheelIndex({ torchWheels: [wheels.torchWheelRetagged], otherWheels: wheels.dependencyWheels });
  const cold: Measured[] = [];
  const warm: Measured[] = [];
  const framework: Measured[] = [];
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
        // The same service with the plugin left out: the torch functions become plain Python ones.
        fs.writeFileSync(path.join(service, 'serverless.yml'), yaml.replace(/^plugins:\n {2}- serverless-torch\n/m, ''));
        framework.push(await timePackage(cli, service));
      } finally {
        fs.rmSync(service, { recursive: true, force: true });
        fs.rmSync(cacheDir, { recursive: true, force: true });
      }
      console.log(
        `run ${run + 1}: cold ${cold[run].seconds.toFixed(1)} s (plugin ${cold[run].pluginSeconds} s; peak RSS: CLI ${mb(cold[run].cliPeak)}, with children ${mb(cold[run].groupPeak)}), ` +
          `warm ${warm[run].seconds.toFixed(1)} s (plugin ${warm[run].pluginSeconds} s; CLI ${mb(warm[run].cliPeak)}); ` +
          `framework alone ${framework[run].seconds.toFixed(1)} s (CLI ${mb(framework[run].cliPeak)})`,
      );
    }
  } finally {
    await index.close();
  }
  const seconds = (list: Measured[]) => median(list.map((m) => m.seconds));
  const plugin = (list: Measured[]) => median(list.map((m) => m.pluginSeconds ?? NaN));
  const peak = (list: Measured[]) => mb(median(list.map((m) => m.cliPeak)));
  console.log(
    `${cli} package, median of ${runs}: cold ${seconds(cold).toFixed(1)} s (plugin ${plugin(cold).toFixed(1)} s), warm ${seconds(warm).toFixed(1)} s ` +
      `(plugin ${plugin(warm).toFixed(1)} s), the framework alone ${seconds(framework).toFixed(1)} s; peak RSS of the CLI ${peak(cold)} cold, ` +
      `${peak(warm)} warm, ${peak(framework)} for the framework alone; with its children ${mb(median(cold.map((m) => m.groupPeak)))} cold`,
  );
}

main().catch((error) => {
  console.error(error);
  process.exit(1);
});
