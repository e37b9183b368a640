import * as assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { createHash } from 'node:crypto';
import * as fs from 'node:fs';
import * as fsp from 'node:fs/promises';
import * as http from 'node:http';
import * as os from 'node:os';
import * as path from 'node:path';

import {
  FixtureWheels,
  WheelIndex,
  isZstandardWheel,
  normalizeProjectName,
  pipEnv,
  prepareFixtureWheels,
  startWheelIndex,
} from '../support/wheel-index';

const TORCH_REQ = 'torch==2.13.0';
const RETAGGED_NAME = 'torch-2.13.0+cpu-cp311-cp311-manylinux_2_17_x86_64.manylinux2014_x86_64.whl';

/** What a python3.11 Lambda (Amazon Linux 2, glibc 2.26) can run; pip matches tags exactly, so list them all. */
const AL2_PLATFORMS = [
  ...Array.from({ length: 10 }, (_, i) => `manylinux_2_${26 - i}_x86_64`),
  'manylinux2014_x86_64',
];

function targetArgs(platforms: string[]): string[] {
  return [
    '--only-binary=:all:',
    '--python-version', '3.11', '--implementation', 'cp', '--abi', 'cp311',
    ...platforms.flatMap((p) => ['--platform', p]),
  ];
}

interface RunResult {
  code: number | null;
  output: string;
}

function pip(args: string[], env: NodeJS.ProcessEnv = pipEnv()): Promise<RunResult> {
  return new Promise((resolve, reject) => {
    const child = spawn('python3', ['-m', 'pip', ...args], { env, stdio: ['ignore', 'pipe', 'pipe'] });
    let output = '';
    child.stdout.setEncoding('utf8').on('data', (d: string) => (output += d));
    child.stderr.setEncoding('utf8').on('data', (d: string) => (output += d));
    // A pip that wanders off to an unreachable index retries for minutes: fail the test instead.
    const timer = setTimeout(() => child.kill('SIGKILL'), 120_000);
    child.on('error', (err) => {
      clearTimeout(timer);
      reject(err);
    });
    child.on('close', (code) => {
      clearTimeout(timer);
      resolve({ code, output });
    });
  });
}

function get(url: string): Promise<{ status: number; headers: http.IncomingHttpHeaders; body: Buffer }> {
  return new Promise((resolve, reject) => {
    http
      .get(url, (res) => {
        const chunks: Buffer[] = [];
        res.on('data', (c: Buffer) => chunks.push(c));
        res.on('end', () => resolve({ status: res.statusCode ?? 0, headers: res.headers, body: Buffer.concat(chunks) }));
        res.on('error', reject);
      })
      .on('error', reject);
  });
}

function sha256(data: Buffer): string {
  return createHash('sha256').update(data).digest('hex');
}

describe('wheel index fixture', function () {
  this.timeout(600_000);

  let wheels: FixtureWheels;
  let index: WheelIndex | undefined;
  let tmp: string;

  before(async () => {
    wheels = await prepareFixtureWheels();
  });

  beforeEach(async () => {
    tmp = await fsp.mkdtemp(path.join(os.tmpdir(), 'wheel-index-test-'));
  });

  afterEach(async () => {
    await index?.close();
    index = undefined;
    await fsp.rm(tmp, { recursive: true, force: true });
  });

  const downloaded = async (): Promise<string[]> => (await fsp.readdir(path.join(tmp, 'dl'))).sort();

  describe('prepareFixtureWheels', () => {
    it('returns torch, a re-tagged copy with the same bytes, and the dependencies', async () => {
      assert.equal(path.basename(wheels.torchWheel), 'torch-2.13.0+cpu-cp311-cp311-manylinux_2_28_x86_64.whl');
      assert.equal(path.basename(wheels.torchWheelRetagged), RETAGGED_NAME);
      assert.ok(wheels.dir.startsWith(os.tmpdir()));
      const [orig, retagged] = await Promise.all([fsp.stat(wheels.torchWheel), fsp.stat(wheels.torchWheelRetagged)]);
      assert.ok(orig.size > 100_000_000, `torch wheel is only ${orig.size} bytes`);
      assert.equal(retagged.size, orig.size);

      const projects = wheels.dependencyWheels.map((w) => normalizeProjectName(path.basename(w).split('-')[0]));
      for (const dep of ['filelock', 'typing-extensions', 'sympy', 'mpmath', 'networkx', 'jinja2', 'markupsafe', 'fsspec', 'zstandard']) {
        assert.ok(projects.includes(dep), `${dep} missing from ${projects.join(', ')}`);
      }
      assert.ok(!projects.includes('torch'));
      assert.ok(!projects.some((p) => p.startsWith('nvidia') || p === 'triton'), 'a CPU torch needs no CUDA packages');
    });

    it('is cached: a second call returns the same files', async () => {
      assert.deepEqual(await prepareFixtureWheels(), wheels);
      // Served from the renamed entry, never from a temporary directory still being filled.
      assert.ok(!path.basename(wheels.dir).startsWith('.tmp-'), wheels.dir);
      assert.ok(fs.existsSync(path.join(wheels.dir, 'fixture.json')));
    });
  });

  describe('pipEnv', () => {
    it('drops every PIP_* variable and points PIP_CONFIG_FILE at the null device', () => {
      const env = pipEnv({ PATH: '/bin', PIP_FIND_LINKS: '/opt/wheels', PIP_INDEX_URL: 'http://x', pip_cert: 'c', HOME: '/root' });
      assert.equal(env.PATH, '/bin');
      assert.equal(env.HOME, '/root');
      assert.equal(env.PIP_CONFIG_FILE, os.devNull);
      assert.equal(env.PIP_FIND_LINKS, undefined);
      assert.equal(env.PIP_INDEX_URL, undefined);
      assert.equal(env.pip_cert, undefined);
    });

    it('leaves pip with no index, find-links or constraint from any config file', async () => {
      const res = await pip(['config', 'list']);
      assert.equal(res.code, 0, res.output);
      assert.doesNotMatch(res.output, /index-url|find-links|constraint/);
    });
  });

  describe('HTTP', () => {
    let deps: string[];
    let typingExt: string;

    beforeEach(async () => {
      deps = wheels.dependencyWheels;
      typingExt = deps.find((w) => path.basename(w).startsWith('typing_extensions-'))!;
      index = await startWheelIndex({ torchWheels: [wheels.torchWheel, wheels.torchWheelRetagged], otherWheels: deps });
    });

    it('lists normalised project names on the root pages', async () => {
      const simple = await get(index!.simpleUrl);
      assert.equal(simple.status, 200);
      assert.match(String(simple.headers['content-type']), /^text\/html/);
      assert.match(simple.body.toString(), /href="\/simple\/typing-extensions\/"/);
      assert.doesNotMatch(simple.body.toString(), /torch/);
      const torch = await get(index!.torchUrl);
      assert.match(torch.body.toString(), /href="\/whl\/cpu\/torch\/"/);
    });

    it('redirects names that are not normalised', async () => {
      const res = await get(index!.simpleUrl + 'Typing_Extensions/');
      assert.equal(res.status, 301);
      assert.equal(res.headers.location, '/simple/typing-extensions/');
    });

    it('anchors files with their sha256 and serves them with Content-Length', async () => {
      const page = (await get(index!.simpleUrl + 'typing-extensions/')).body.toString();
      const m = /href="([^"#]+)#sha256=([0-9a-f]{64})"/.exec(page);
      assert.ok(m, page);
      const bytes = await fsp.readFile(typingExt);
      assert.equal(m[2], sha256(bytes));
      const file = await get(new URL(m[1], index!.simpleUrl).toString());
      assert.equal(file.status, 200);
      assert.equal(Number(file.headers['content-length']), bytes.length);
      assert.ok(file.body.equals(bytes));
      assert.equal(decodeURIComponent(m[1]), index!.pathOf(typingExt));
      assert.ok(index!.requests.includes(index!.pathOf(typingExt)));
    });

    it('percent-encodes the "+" of torch file names', async () => {
      const page = (await get(index!.torchUrl + 'torch/')).body.toString();
      assert.ok(page.includes('/whl/cpu/torch-2.13.0%2Bcpu-cp311-cp311-manylinux_2_28_x86_64.whl#sha256='), page);
      assert.ok(page.includes(`/whl/cpu/${encodeURIComponent(RETAGGED_NAME)}#sha256=`), page);
    });

    it('answers 404 to unknown paths', async () => {
      for (const p of ['nope', 'simple/nope/', 'simple/torch/', 'whl/cpu/sympy/', 'whl/cpu/a/b']) {
        const base = new URL(index!.simpleUrl).origin;
        assert.equal((await get(`${base}/${p}`)).status, 404, p);
      }
    });
  });

  describe('with pip', () => {
    it('downloads the re-tagged torch for a manylinux_2_17 (python3.11 Lambda) target', async () => {
      index = await startWheelIndex({ torchWheels: [wheels.torchWheel, wheels.torchWheelRetagged], otherWheels: [] });
      const res = await pip([
        'download', '--no-deps',
        ...targetArgs(['manylinux_2_17_x86_64', 'manylinux2014_x86_64']),
        '-d', path.join(tmp, 'dl'),
        '--index-url', index.torchUrl,
        TORCH_REQ,
      ]);
      assert.equal(res.code, 0, res.output);
      assert.deepEqual(await downloaded(), [RETAGGED_NAME]);
      assert.ok(index.requests.includes('/whl/cpu/torch/'));
      assert.ok(index.requests.includes(index.pathOf(wheels.torchWheelRetagged)));
      assert.ok(!index.requests.includes(index.pathOf(wheels.torchWheel)));
    });

    it('refuses the untouched manylinux_2_28 wheel for glibc 2.26 (python3.11 Lambda)', async () => {
      index = await startWheelIndex({ torchWheels: [wheels.torchWheel], otherWheels: [] });
      const res = await pip([
        'download', '--no-deps', ...targetArgs(AL2_PLATFORMS), '-d', path.join(tmp, 'dl'), '--index-url', index.torchUrl, TORCH_REQ,
      ]);
      assert.notEqual(res.code, 0, res.output);
      assert.match(res.output, /No matching distribution found for torch==2\.13\.0/);
      // pip read the page and rejected the file by its tags, without fetching it.
      assert.ok(index.requests.includes('/whl/cpu/torch/'));
      assert.ok(!index.requests.includes(index.pathOf(wheels.torchWheel)));
    });

    it('accepts that same wheel for a glibc 2.28 target (control for the refusal)', async () => {
      index = await startWheelIndex({ torchWheels: [wheels.torchWheel], otherWheels: [] });
      const res = await pip([
        'download', '--no-deps', ...targetArgs(['manylinux_2_28_x86_64']), '-d', path.join(tmp, 'dl'), '--index-url', index.torchUrl, TORCH_REQ,
      ]);
      assert.equal(res.code, 0, res.output);
      assert.deepEqual(await downloaded(), [path.basename(wheels.torchWheel)]);
    });

    it('resolves torch and all its dependencies across the two indexes', async () => {
      index = await startWheelIndex({
        torchWheels: [wheels.torchWheel, wheels.torchWheelRetagged],
        otherWheels: wheels.dependencyWheels,
      });
      const res = await pip([
        'download', ...targetArgs(AL2_PLATFORMS), '-d', path.join(tmp, 'dl'),
        '--index-url', index.torchUrl, '--extra-index-url', index.simpleUrl, TORCH_REQ,
      ]);
      assert.equal(res.code, 0, res.output);
      // zstandard is served too (the plugin's zstd decoder), but torch does not depend on it.
      const expected = [RETAGGED_NAME, ...wheels.dependencyWheels.filter((w) => !isZstandardWheel(w)).map((w) => path.basename(w))].sort();
      assert.deepEqual(await downloaded(), expected);
    });

    it('fails when an injected 404 hides the wheel', async () => {
      index = await startWheelIndex({
        torchWheels: [wheels.torchWheelRetagged],
        otherWheels: [],
        faults: { [`/whl/cpu/${RETAGGED_NAME}`]: 404 },
      });
      const res = await pip([
        'download', '--no-deps', ...targetArgs(AL2_PLATFORMS), '-d', path.join(tmp, 'dl'), '--index-url', index.torchUrl, TORCH_REQ,
      ]);
      assert.notEqual(res.code, 0, res.output);
      assert.match(res.output, /404/);
      assert.ok(index.requests.includes(index.pathOf(wheels.torchWheelRetagged)));
    });

    it('fails when an injected 404 hides the project page', async () => {
      index = await startWheelIndex({ torchWheels: [wheels.torchWheelRetagged], otherWheels: [], faults: { '/whl/cpu/torch/': 404 } });
      const res = await pip([
        'download', '--no-deps', ...targetArgs(AL2_PLATFORMS), '-d', path.join(tmp, 'dl'), '--index-url', index.torchUrl, TORCH_REQ,
      ]);
      assert.notEqual(res.code, 0, res.output);
      assert.match(res.output, /No matching distribution found/);
    });

    it('fails on a wrong sha256 anchor and on a corrupted file', async () => {
      const typingExt = wheels.dependencyWheels.find((w) => path.basename(w).startsWith('typing_extensions-'))!;
      index = await startWheelIndex({ torchWheels: [], otherWheels: [typingExt] });
      const fetch = (dir: string) =>
        pip(['download', '--no-deps', '--only-binary=:all:', '-d', path.join(tmp, dir), '--index-url', index!.simpleUrl, 'typing-extensions']);

      const healthy = await fetch('ok');
      assert.equal(healthy.code, 0, healthy.output);

      for (const fault of ['wrong-hash', 'garbage'] as const) {
        index.faults[index.pathOf(typingExt)] = fault;
        const res = await fetch(fault);
        assert.notEqual(res.code, 0, `${fault}: ${res.output}`);
        assert.match(res.output, /THESE PACKAGES DO NOT MATCH THE HASHES/, fault);
        assert.ok(!fs.existsSync(path.join(tmp, fault, path.basename(typingExt))), fault);
      }
    });
  });
});
