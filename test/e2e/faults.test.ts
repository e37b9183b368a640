import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { FixtureWheels, WheelIndex, prepareFixtureWheels, startWheelIndex } from '../support/wheel-index';
import { RunningSls, TEST_CACHE, makeService, runSls, serviceYaml, startSls } from '../support/sls';

// pip's own HTTP cache would serve torch without a download to interrupt, and is not ours to fill.
const NO_PIP_CACHE = { PIP_NO_CACHE_DIR: '1' };

function sha256(file: string): string {
  return createHash('sha256').update(fs.readFileSync(file)).digest('hex');
}

/** sha256 of every zip the run left in .serverless/, by file name. */
function artifacts(service: string): Record<string, string> {
  const dir = path.join(service, '.serverless');
  if (!fs.existsSync(dir)) return {};
  return Object.fromEntries(fs.readdirSync(dir).filter((file) => file.endsWith('.zip')).sort().map((file) => [file, sha256(path.join(dir, file))]));
}

/** What a deploy could pick up from .serverless/: zips, the state file, staging leftovers. */
function deployable(service: string): string[] {
  const dir = path.join(service, '.serverless');
  if (!fs.existsSync(dir)) return [];
  return fs.readdirSync(dir).filter((file) => file.endsWith('.zip') || file === 'serverless-state.json' || file.startsWith('.torch-staging'));
}

/** Entries a later run would read, each checked for the record that marks it complete. */
function cacheEntries(cacheDir: string): { trees: string[]; artifacts: string[] } {
  const list = (kind: string, record: string) => {
    const dir = path.join(cacheDir, kind);
    if (!fs.existsSync(dir)) return [];
    return fs.readdirSync(dir).map((key) => {
      assert.ok(fs.existsSync(path.join(dir, key, record)), `${kind}/${key} is in place without ${record}: a half-written entry`);
      return key;
    });
  };
  return { trees: list('trees', 'tree.json'), artifacts: list('artifacts', 'layers.json') };
}

function yamlFor(index: WheelIndex, cacheDir: string, service = 'digits'): string {
  return serviceYaml({ torchIndexUrl: index.torchUrl, indexUrl: index.simpleUrl })
    .replace(`cacheDir: ${TEST_CACHE}`, `cacheDir: ${cacheDir}`)
    .replace('service: digits', `service: ${service}`);
}

function tempDir(label: string): string {
  return fs.mkdtempSync(path.join(os.tmpdir(), `serverless-torch-${label}-`));
}

async function waitFor(run: RunningSls, reached: () => boolean, what: string): Promise<void> {
  let finished = false;
  void run.result.then(() => (finished = true));
  const deadline = Date.now() + 600_000;
  while (!reached()) {
    if (finished) assert.fail(`the run ended before ${what}:\n${run.output()}`);
    if (Date.now() > deadline) assert.fail(`no ${what} within 10 minutes:\n${run.output()}`);
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
}

function largestWorkZip(cacheDir: string): number {
  const tmp = path.join(cacheDir, 'tmp');
  let largest = 0;
  // Layer sets are built in work directories named after their cache kind, "artifacts".
  for (const work of fs.existsSync(tmp) ? fs.readdirSync(tmp).filter((name) => name.startsWith('artifacts-')) : []) {
    for (const attempt of fs.readdirSync(path.join(tmp, work), { withFileTypes: true }).filter((entry) => entry.isDirectory())) {
      for (const file of fs.readdirSync(path.join(tmp, work, attempt.name)).filter((name) => name.endsWith('.zip'))) {
        largest = Math.max(largest, fs.statSync(path.join(tmp, work, attempt.name, file)).size);
      }
    }
  }
  return largest;
}

/** Mounts a tmpfs of `megabytes` at `dir`; false where this machine does not allow it (not root, no CAP_SYS_ADMIN). */
function mountTmpfs(dir: string, megabytes: number): boolean {
  try {
    execFileSync('mount', ['-t', 'tmpfs', '-o', `size=${megabytes}m`, 'tmpfs', dir], { stdio: 'ignore' });
    return true;
  } catch {
    return false;
  }
}

describe('faults during packaging (real CLI, SIGKILL, concurrent runs, full disks)', function () {
  let wheels: FixtureWheels;
  let index: WheelIndex;
  let torchPath: string;
  let reference: Record<string, string>;
  /** A cache that has lived through every kill below, warm at the end. */
  let survivorCache: string;
  const cleanup: string[] = [];

  before(async () => {
    wheels = await prepareFixtureWheels();
    index = await startWheelIndex({ torchWheels: [wheels.torchWheelRetagged], otherWheels: wheels.dependencyWheels });
    torchPath = index.pathOf(wheels.torchWheelRetagged);
    // The artifacts of an uninterrupted run from a cold cache: what every later run must reproduce.
    const cache = tempDir('clean-cache');
    const service = makeService({ files: { 'serverless.yml': yamlFor(index, cache) } });
    cleanup.push(cache, service);
    const result = await runSls('serverless', ['package'], service, NO_PIP_CACHE);
    assert.equal(result.code, 0, `${result.stdout}\n${result.stderr}`);
    reference = artifacts(service);
    assert.ok(Object.keys(reference).some((file) => file.startsWith('torchPacked')), JSON.stringify(reference));
  });

  after(async () => {
    await index?.close();
    for (const dir of cleanup) fs.rmSync(dir, { recursive: true, force: true });
  });

  it('a run killed during download, install, strip and zip leaves the cache valid, and the next run gives byte-identical artifacts', async () => {
    survivorCache = tempDir('killed-cache');
    const service = makeService({ files: { 'serverless.yml': yamlFor(index, survivorCache) } });
    cleanup.push(survivorCache, service);
    const phases: { name: string; before?: () => void; reached: (run: RunningSls) => Promise<void>; cacheAfter: { trees: number; artifacts: number } }[] = [
      {
        name: 'download',
        before: () => (index.faults[torchPath] = 'slow'),
        reached: async (run) => {
          await waitFor(run, () => /pip:\s+Downloading \S*torch-2\.13\.0/.test(run.output()), 'torch download');
          await new Promise((resolve) => setTimeout(resolve, 1500));
        },
        cacheAfter: { trees: 0, artifacts: 0 },
      },
      {
        name: 'install',
        reached: async (run) => {
          await waitFor(run, () => /pip: Installing collected packages/.test(run.output()), 'pip install');
          await new Promise((resolve) => setTimeout(resolve, 1000));
        },
        cacheAfter: { trees: 0, artifacts: 0 },
      },
      {
        name: 'strip',
        reached: (run) => waitFor(run, () => /strip [a-z-]+: \d+ files/.test(run.output()), 'stripping'),
        cacheAfter: { trees: 0, artifacts: 0 },
      },
      {
        name: 'zip',
        reached: (run) => waitFor(run, () => largestWorkZip(survivorCache) > 8 * 1024 * 1024, 'a layer zip being written'),
        cacheAfter: { trees: 1, artifacts: 0 },
      },
    ];
    for (const phase of phases) {
      phase.before?.();
      const run = startSls('serverless', ['package', '--verbose'], service, NO_PIP_CACHE);
      try {
        await phase.reached(run);
      } finally {
        run.killGroup();
        delete index.faults[torchPath];
      }
      const killed = await run.result;
      assert.equal(killed.code, 128, `the run was not killed during ${phase.name}`);
      const entries = cacheEntries(survivorCache);
      assert.deepEqual({ trees: entries.trees.length, artifacts: entries.artifacts.length }, phase.cacheAfter, `cache after a kill during ${phase.name}`);
      assert.deepEqual(deployable(service).filter((file) => !file.startsWith('.torch-staging')), [], `a kill during ${phase.name} left artifacts`);
      const leftovers = fs.readdirSync(path.join(survivorCache, 'tmp'));
      process.stdout.write(`        killed during ${phase.name}: cache holds ${entries.trees.length} tree(s), ${entries.artifacts.length} layer set(s); work dirs left in tmp/: ${leftovers.length}\n`);
    }
    const result = await runSls('serverless', ['package'], service, NO_PIP_CACHE);
    assert.equal(result.code, 0, `${result.stdout}\n${result.stderr}`);
    assert.deepEqual(artifacts(service), reference);
    assert.deepEqual(deployable(service).filter((file) => file.startsWith('.torch-staging')), [], 'the staging directory of a killed run is left behind');
    assert.deepEqual(fs.readdirSync(path.join(survivorCache, 'tmp')), [], 'the next run removes the work directories of the killed ones');
  });

  it('two services packaged at the same time with one cache both succeed and share the layers', async () => {
    const cache = tempDir('shared-cache');
    const first = makeService({ files: { 'serverless.yml': yamlFor(index, cache, 'digits') } });
    const second = makeService({ files: { 'serverless.yml': yamlFor(index, cache, 'letters'), 'letters.py': 'ALPHABET = "abc"\n' } });
    cleanup.push(cache, first, second);
    // Both start from a cold cache, so both resolve, strip and zip the same entries at once.
    const runs = [startSls('serverless', ['package', '--verbose'], first, NO_PIP_CACHE), startSls('serverless', ['package', '--verbose'], second, NO_PIP_CACHE)];
    const [a, b] = await Promise.all(runs.map((run) => run.result));
    assert.equal(a.code, 0, `${a.stdout}\n${a.stderr}`);
    assert.equal(b.code, 0, `${b.stdout}\n${b.stderr}`);
    for (const result of [a, b]) {
      assert.match(result.stdout + result.stderr, /Dependencies for python3\.11 x86_64: [\d.]+ MiB installed/, 'both runs built the tree: they raced for the same entry');
    }
    const layersOf = (all: Record<string, string>) => Object.fromEntries(Object.entries(all).filter(([file]) => file.startsWith('torch')));
    assert.deepEqual(layersOf(artifacts(first)), layersOf(reference));
    assert.deepEqual(layersOf(artifacts(second)), layersOf(reference));
    assert.equal(artifacts(first)['digits-torch.zip'], reference['digits-torch.zip']);
    assert.ok(artifacts(second)['letters-torch.zip'], 'the second service has its own function zip');
    const entries = cacheEntries(cache);
    assert.equal(entries.trees.length, 1, 'one tree: the second commit found the first in place');
    assert.equal(entries.artifacts.length, 1, 'one set of layers');
    assert.deepEqual(fs.readdirSync(path.join(cache, 'tmp')), [], 'work directories left behind');
  });

  describe('a full disk', () => {
    const mounts: string[] = [];
    afterEach(() => {
      for (const dir of mounts.splice(0)) execFileSync('umount', [dir], { stdio: 'ignore' });
    });

    it('in the cache directory ends in TORCH_DISK_FULL naming the directory and the bytes needed', async function () {
      const cache = tempDir('full-cache');
      cleanup.push(cache);
      assert.ok(mountTmpfs(cache, 64), 'a 64 MB tmpfs could not be mounted (the test runs as root)');
      mounts.push(cache);
      const service = makeService({ files: { 'serverless.yml': yamlFor(index, cache) } });
      cleanup.push(service);
      const result = await runSls('serverless', ['package'], service, NO_PIP_CACHE);
      const output = `${result.stdout}\n${result.stderr}`;
      assert.notEqual(result.code, 0);
      assert.deepEqual([...output.matchAll(/\[(TORCH_[A-Z_]+)\]/g)].map((match) => match[1]), ['TORCH_DISK_FULL'], output);
      assert.match(output, new RegExp(`No space left on the disk holding ${cache}/\\S+ while pip tried to download torch \\([\\d.]+ [KM]?i?B free there now\\)\\. It needs about [\\d.]+ MiB \\(\\d+ bytes\\) free there for the 191\\.8 MB torch wheel`));
      assert.doesNotMatch(output, /at .*\.js:\d+:\d+/);
      assert.deepEqual(deployable(service), []);
      process.stdout.write(`        ${output.slice(output.indexOf('[TORCH_DISK_FULL]')).split('\n')[0]}\n`);
    });

    it('in .serverless/ ends in TORCH_DISK_FULL before the layers are copied', async function () {
      assert.ok(survivorCache, 'runs after the kill test, whose cache is warm');
      const made = makeService({ files: { 'serverless.yml': yamlFor(index, survivorCache) } });
      // The whole service on a small disk: the framework removes .serverless/ itself, which a mount point would not allow.
      const service = tempDir('full-service');
      cleanup.push(made, service);
      assert.ok(mountTmpfs(service, 48), 'a 48 MB tmpfs could not be mounted (the test runs as root)');
      mounts.push(service);
      fs.cpSync(made, service, { recursive: true, verbatimSymlinks: true });
      const result = await runSls('serverless', ['package'], service, NO_PIP_CACHE);
      const output = `${result.stdout}\n${result.stderr}`;
      assert.notEqual(result.code, 0);
      assert.deepEqual([...output.matchAll(/\[(TORCH_[A-Z_]+)\]/g)].map((match) => match[1]), ['TORCH_DISK_FULL'], output);
      assert.match(output, /No space left on the disk holding \S+\/\.serverless\/\.torch-staging-\S+ while copying the layers of python3\.11 x86_64 \(4\d\.\d MiB free there now\)\. It needs about 1\d\d\.\d MiB \(\d+ bytes\) free there for 2 layer zips\. Free some space on that disk/);
      assert.doesNotMatch(output, /at .*\.js:\d+:\d+/);
      assert.deepEqual(deployable(service), []);
      process.stdout.write(`        ${output.slice(output.indexOf('[TORCH_DISK_FULL]')).split('\n')[0]}\n`);
    });
  });
});
