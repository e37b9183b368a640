/**
 * Real wheels and a local PEP 503 index for tests (and for scripts/run-example.js,
 * which requires the compiled copy of this module in offline mode).
 *
 * The machines this project runs on reach no Python package index, only a local
 * store of wheels that pip is configured to read. prepareFixtureWheels() copies
 * torch and its dependencies out of that store once; startWheelIndex() serves them
 * over HTTP on 127.0.0.1 the way PyPI and the PyTorch CPU index do, so the code
 * under test can be pointed at "an index" exactly as a user would point it at
 * https://download.pytorch.org/whl/cpu.
 *
 * URL layout of a started index (paths as they appear in `requests` and as keys of
 * `faults`, i.e. percent-decoded):
 *   /simple/                      project list of the dependency index
 *   /simple/<project>/            one page per PEP 503-normalised project name
 *   /simple/<file name>           a dependency wheel
 *   /whl/cpu/                     project list of the torch index
 *   /whl/cpu/torch/               ...
 *   /whl/cpu/<file name>          a torch wheel (same shape as the PyTorch index)
 * A project page's path always ends in "/" and a normalised name has no ".", so
 * it never collides with a file name ending in ".whl".
 */
import { spawn } from 'node:child_process';
import { createHash } from 'node:crypto';
import * as fs from 'node:fs';
import * as fsp from 'node:fs/promises';
import * as http from 'node:http';
import type { AddressInfo } from 'node:net';
import * as os from 'node:os';
import * as path from 'node:path';

export const TORCH_VERSION = '2.13.0';

/** Platform tags of the wheel in the local store (torch >= 2.7 needs glibc 2.28). */
export const ORIGINAL_PLATFORM_TAG = 'manylinux_2_28_x86_64';

/** The compressed tag set given to the re-tagged copy: glibc 2.17, what python3.9–3.11 Lambda (glibc 2.26) accepts. */
export const RETAGGED_PLATFORM_TAG = 'manylinux_2_17_x86_64.manylinux2014_x86_64';

export interface FixtureWheels {
  /** The cache directory holding every file below. Treat it as read-only: it is shared by every run. */
  dir: string;
  /** torch-2.13.0+cpu-cp311-cp311-manylinux_2_28_x86_64.whl, as it came from the store. */
  torchWheel: string;
  /** The same bytes under the name torch-2.13.0+cpu-cp311-cp311-manylinux_2_17_x86_64.manylinux2014_x86_64.whl. */
  torchWheelRetagged: string;
  /** torch's dependencies for CPython 3.11 x86_64 (filelock, sympy, ...) and zstandard, sorted by file name. */
  dependencyWheels: string[];
}

/** The zstd decoder's wheel among `wheels`: an index without it makes the plugin fall back to zlib. */
export function isZstandardWheel(wheel: string): boolean {
  return path.basename(wheel).startsWith('zstandard-');
}

/**
 * What a fault does to the URL path it is keyed by:
 * - 404: the path answers 404 Not Found.
 * - 'garbage': a file is replaced by as many bytes of junk (so only the content is
 *   wrong, not the length); a page is replaced by junk that is not HTML.
 * - 'slow': a file is served intact at about 16 MB/s (torch then takes ~12 s), so a test
 *   can act while a download is in progress.
 * - 'wrong-hash': keyed by a file, every anchor to that file carries a wrong
 *   #sha256 (the file itself is served intact); keyed by a page, every anchor on it does.
 */
export type Fault = 'garbage' | 404 | 'wrong-hash' | 'slow';

export interface WheelIndexOptions {
  /** Served under /whl/cpu/. */
  torchWheels: string[];
  /** Served under /simple/. */
  otherWheels: string[];
  /** Keyed by percent-decoded URL path, e.g. "/whl/cpu/torch/" or "/simple/sympy-1.14.0-py3-none-any.whl". */
  faults?: { [urlPath: string]: Fault };
}

export interface WheelIndex {
  /** http://127.0.0.1:PORT/simple/ */
  simpleUrl: string;
  /** http://127.0.0.1:PORT/whl/cpu/ */
  torchUrl: string;
  /** Every request's percent-decoded path (no query string), in arrival order. */
  requests: string[];
  /** The live fault table: tests may add or remove entries while the server runs. */
  faults: { [urlPath: string]: Fault };
  /** The URL path (percent-decoded, as in `requests` and `faults`) a served wheel is found at. */
  pathOf(wheel: string): string;
  close(): Promise<void>;
}

const CACHE_ROOT = path.join(os.tmpdir(), 'serverless-torch-fixture-wheels');
// Bump the suffix when the layout of a cache entry changes, so old entries are ignored.
const CACHE_KEY = `torch-${TORCH_VERSION}-cp311-x86_64-v2`;
const MANIFEST = 'fixture.json';
// Temporary directories older than this belong to runs that were killed mid-download.
const STALE_TEMP_MS = 60 * 60 * 1000;

const PYTHON = 'python3';

interface Manifest {
  torchWheel: string;
  torchWheelRetagged: string;
  dependencyWheels: string[];
  sizes: { [file: string]: number };
}

let preparing: Promise<FixtureWheels> | undefined;

/**
 * torch 2.13.0 and its dependencies for CPython 3.11 x86_64, and zstandard (the zstd decoder
 * the plugin ships), from pip's configured wheel store, cached under os.tmpdir() across runs.
 */
export function prepareFixtureWheels(): Promise<FixtureWheels> {
  if (!preparing) {
    preparing = prepare().catch((err) => {
      preparing = undefined;
      throw err;
    });
  }
  return preparing;
}

async function prepare(): Promise<FixtureWheels> {
  const finalDir = path.join(CACHE_ROOT, CACHE_KEY);
  const cached = await readCache(finalDir);
  if (cached) return cached;

  await fsp.mkdir(CACHE_ROOT, { recursive: true });
  await removeStaleTemps();
  // Filled completely, then renamed into place: an interrupted run leaves only a
  // temporary directory behind, never a cache entry that looks valid but is not.
  const tmp = await fsp.mkdtemp(path.join(CACHE_ROOT, `.tmp-${CACHE_KEY}-`));
  try {
    await downloadFromStore(tmp);
    const manifest = await buildCacheEntry(tmp);
    await fsp.writeFile(path.join(tmp, MANIFEST), JSON.stringify(manifest, null, 2));
    // mkdtemp creates 0700; the entry is meant to be shared like the rest of the tmp dir.
    await fsp.chmod(tmp, 0o755);
    // An entry that exists but failed validation (e.g. a tmp cleaner deleted files) is replaced.
    await fsp.rm(finalDir, { recursive: true, force: true });
    try {
      await fsp.rename(tmp, finalDir);
    } catch (err) {
      // Another process finished first: use its entry.
      const raced = await readCache(finalDir);
      if (raced) return raced;
      throw err;
    }
  } finally {
    await fsp.rm(tmp, { recursive: true, force: true });
  }
  const fresh = await readCache(finalDir);
  if (!fresh) throw new Error(`fixture wheel cache ${finalDir} is invalid right after it was written`);
  return fresh;
}

async function readCache(dir: string): Promise<FixtureWheels | undefined> {
  let manifest: Manifest;
  try {
    manifest = JSON.parse(await fsp.readFile(path.join(dir, MANIFEST), 'utf8')) as Manifest;
  } catch {
    return undefined;
  }
  for (const [file, size] of Object.entries(manifest.sizes)) {
    const st = await fsp.stat(path.join(dir, file)).catch(() => undefined);
    if (!st || st.size !== size) return undefined;
  }
  return {
    dir,
    torchWheel: path.join(dir, manifest.torchWheel),
    torchWheelRetagged: path.join(dir, manifest.torchWheelRetagged),
    dependencyWheels: manifest.dependencyWheels.map((f) => path.join(dir, f)),
  };
}

async function removeStaleTemps(): Promise<void> {
  for (const name of await fsp.readdir(CACHE_ROOT)) {
    if (!name.startsWith('.tmp-')) continue;
    const full = path.join(CACHE_ROOT, name);
    const st = await fsp.stat(full).catch(() => undefined);
    if (st && Date.now() - st.mtimeMs > STALE_TEMP_MS) {
      await fsp.rm(full, { recursive: true, force: true });
    }
  }
}

async function downloadFromStore(dest: string): Promise<void> {
  // Deliberately run with pip's own configuration: on these machines it IS the
  // wheel store (find-links and file:// indexes).
  const args = [
    '-m', 'pip', 'download', `torch==${TORCH_VERSION}`, 'zstandard',
    '--only-binary=:all:',
    // The host interpreter is CPython 3.11 x86_64, but say so: the cache key promises it.
    '--python-version', '3.11', '--implementation', 'cp', '--abi', 'cp311',
    '--platform', ORIGINAL_PLATFORM_TAG,
    ...acceptedLegacyPlatforms(),
    '--disable-pip-version-check',
    '-d', dest,
    ...(await storeIndexArgs()),
  ];
  const res = await run(PYTHON, args, { env: process.env });
  if (res.code !== 0) {
    throw new Error(
      `pip download of torch==${TORCH_VERSION} from the local wheel store failed (exit ${res.code}); ` +
        `pip's own configuration (\`pip config list\`) is expected to name the store:\n${tail(res.stderr || res.stdout)}`,
    );
  }
}

/** Every glibc tag up to 2.28 (and the legacy aliases), so dependencies built for older glibc qualify too. */
function acceptedLegacyPlatforms(): string[] {
  const tags: string[] = [];
  for (let minor = 27; minor >= 17; minor--) tags.push(`manylinux_2_${minor}_x86_64`);
  tags.push('manylinux2014_x86_64', 'manylinux2010_x86_64', 'manylinux1_x86_64');
  return tags.flatMap((t) => ['--platform', t]);
}

/**
 * pip always consults its *primary* index, which defaults to pypi.org. Unreachable,
 * it costs over a minute of retries per run (measured: 77 s instead of 1.6 s). The
 * store is configured as find-links plus extra-index-url only, so promote the first
 * configured extra index to primary; with no index configured at all, use
 * find-links alone.
 */
export async function storeIndexArgs(): Promise<string[]> {
  const res = await run(PYTHON, ['-m', 'pip', 'config', 'list'], { env: process.env });
  if (res.code !== 0) return [];
  const values = (key: string): string[] => {
    const out: string[] = [];
    for (const line of res.stdout.split('\n')) {
      const m = /^[^.]*\.([a-z-]+)='(.*)'$/.exec(line.trim());
      // Values are printed as Python reprs: a multi-line config value shows up with literal "\n"s.
      if (m && m[1] === key) out.push(...m[2].replace(/\\n/g, ' ').split(/\s+/).filter(Boolean));
    }
    return out;
  };
  // `pip config list` includes PIP_* environment variables (as ":env:." entries).
  if (values('index-url').length > 0) return [];
  const extras = values('extra-index-url');
  if (extras.length > 0) return ['--index-url', extras[0]];
  return ['--no-index'];
}

async function buildCacheEntry(dir: string): Promise<Manifest> {
  const files = (await fsp.readdir(dir)).filter((f) => f.endsWith('.whl')).sort();
  const torchPattern = new RegExp(
    `^torch-${TORCH_VERSION.replace(/\./g, '\\.')}(\\+[a-z0-9.]+)?-cp311-cp311-${ORIGINAL_PLATFORM_TAG}\\.whl$`,
  );
  const torch = files.find((f) => torchPattern.test(f));
  if (!torch) {
    throw new Error(`pip's wheel store gave no ${ORIGINAL_PLATFORM_TAG} torch ${TORCH_VERSION} wheel for cp311; got: ${files.join(', ')}`);
  }
  // pip picks wheels by the tags in the file name only. The WHEEL file inside still
  // says "Tag: cp311-cp311-manylinux_2_28_x86_64" and pip does not compare the two,
  // so this copy installs for a glibc 2.26 target. It would not *run* there
  // (libtorch_cpu.so needs GLIBC_2.28): it exists to exercise packaging for
  // python3.11 offline, where the real choice would be an older torch.
  const retagged = torch.replace(`-${ORIGINAL_PLATFORM_TAG}.whl`, `-${RETAGGED_PLATFORM_TAG}.whl`);
  try {
    await fsp.link(path.join(dir, torch), path.join(dir, retagged));
  } catch {
    await fsp.copyFile(path.join(dir, torch), path.join(dir, retagged));
  }
  const sizes: { [file: string]: number } = {};
  for (const f of [...files, retagged]) sizes[f] = (await fsp.stat(path.join(dir, f))).size;
  return {
    torchWheel: torch,
    torchWheelRetagged: retagged,
    dependencyWheels: files.filter((f) => f !== torch),
    sizes,
  };
}

/**
 * A copy of `base` for a child process that must use only the indexes it is told
 * about on its command line: no PIP_* variable survives, and PIP_CONFIG_FILE set to
 * os.devNull makes pip skip every configuration file (global, user and site).
 */
export function pipEnv(base: NodeJS.ProcessEnv = process.env): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = {};
  for (const [key, value] of Object.entries(base)) {
    if (value !== undefined && !/^PIP_/i.test(key)) env[key] = value;
  }
  env.PIP_CONFIG_FILE = os.devNull;
  // Without config the self version check is back on; it queries the primary index,
  // which is pypi.org when a command names none, and adds stray requests otherwise.
  env.PIP_DISABLE_PIP_VERSION_CHECK = '1';
  return env;
}

/** PEP 503 name normalisation. */
export function normalizeProjectName(name: string): string {
  return name.toLowerCase().replace(/[-_.]+/g, '-');
}

interface Served {
  file: string;
  name: string;
  /** Percent-decoded URL path. */
  urlPath: string;
  size: number;
  sha256: string;
}

interface Index {
  prefix: string;
  projects: Map<string, Served[]>;
  byName: Map<string, Served>;
}

/** Start a PEP 503 server on 127.0.0.1 (a free port) serving the given wheels. */
export async function startWheelIndex(opts: WheelIndexOptions): Promise<WheelIndex> {
  const indexes = [
    await buildIndex('/simple/', opts.otherWheels),
    await buildIndex('/whl/cpu/', opts.torchWheels),
  ];
  const faults: { [urlPath: string]: Fault } = { ...(opts.faults ?? {}) };
  const requests: string[] = [];

  const server = http.createServer((req, res) => {
    handle(req, res, indexes, faults, requests);
  });
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => {
      server.off('error', reject);
      resolve();
    });
  });
  const { port } = server.address() as AddressInfo;
  const base = `http://127.0.0.1:${port}`;

  return {
    simpleUrl: `${base}/simple/`,
    torchUrl: `${base}/whl/cpu/`,
    requests,
    faults,
    pathOf(wheel: string): string {
      const name = path.basename(wheel);
      for (const index of indexes) {
        const served = index.byName.get(name);
        if (served) return served.urlPath;
      }
      throw new Error(`${name} is not served by this index`);
    },
    close(): Promise<void> {
      return new Promise((resolve, reject) => {
        server.close((err) => (err ? reject(err) : resolve()));
        // Keep-alive connections (pip keeps one open) would otherwise hold close() open.
        server.closeAllConnections();
      });
    },
  };
}

const WHEEL_NAME = /^([A-Za-z0-9_.]+)-[^-]+(-\d[^-]*)?-[^-]+-[^-]+-[^-]+\.whl$/;

async function buildIndex(prefix: string, wheels: string[]): Promise<Index> {
  const projects = new Map<string, Served[]>();
  const byName = new Map<string, Served>();
  for (const file of wheels) {
    const name = path.basename(file);
    const m = WHEEL_NAME.exec(name);
    if (!m) throw new Error(`not a wheel file name: ${name}`);
    if (byName.has(name)) throw new Error(`${name} is given twice for ${prefix}`);
    const { size, sha256 } = await digest(file);
    const served: Served = { file, name, urlPath: prefix + name, size, sha256 };
    byName.set(name, served);
    const project = normalizeProjectName(m[1]);
    projects.set(project, [...(projects.get(project) ?? []), served]);
  }
  return { prefix, projects, byName };
}

const digests = new Map<string, { size: number; mtimeMs: number; sha256: string }>();

async function digest(file: string): Promise<{ size: number; sha256: string }> {
  const st = await fsp.stat(file);
  const hit = digests.get(file);
  if (hit && hit.size === st.size && hit.mtimeMs === st.mtimeMs) return hit;
  const hash = createHash('sha256');
  for await (const chunk of fs.createReadStream(file)) hash.update(chunk as Buffer);
  const entry = { size: st.size, mtimeMs: st.mtimeMs, sha256: hash.digest('hex') };
  digests.set(file, entry);
  return entry;
}

function handle(
  req: http.IncomingMessage,
  res: http.ServerResponse,
  indexes: Index[],
  faults: { [urlPath: string]: Fault },
  requests: string[],
): void {
  let urlPath: string;
  try {
    urlPath = decodeURIComponent(new URL(req.url ?? '/', 'http://127.0.0.1').pathname);
  } catch {
    send(res, 400, 'text/plain', 'bad request path\n');
    return;
  }
  requests.push(urlPath);
  if (req.method !== 'GET' && req.method !== 'HEAD') {
    res.setHeader('Allow', 'GET, HEAD');
    send(res, 405, 'text/plain', 'method not allowed\n');
    return;
  }
  const fault = faults[urlPath];
  if (fault === 404) {
    send(res, 404, 'text/plain', 'not found (injected fault)\n');
    return;
  }

  if (urlPath === '/') {
    const links = indexes.map((i) => `<a href="${i.prefix}">${i.prefix}</a><br/>`);
    sendPage(req, res, 'Indexes', links, fault);
    return;
  }
  for (const index of indexes) {
    if (urlPath === index.prefix.slice(0, -1)) {
      redirect(res, index.prefix);
      return;
    }
    if (!urlPath.startsWith(index.prefix)) continue;
    const rest = urlPath.slice(index.prefix.length);
    if (rest === '') {
      const names = [...index.projects.keys()].sort();
      sendPage(req, res, 'Simple index', names.map((n) => `<a href="${index.prefix}${n}/">${n}</a><br/>`), fault);
      return;
    }
    const served = index.byName.get(rest);
    if (served) {
      sendFile(req, res, served, fault);
      return;
    }
    const m = /^([^/]+)(\/?)$/.exec(rest);
    if (!m) break;
    const project = normalizeProjectName(m[1]);
    const files = index.projects.get(project);
    if (!files) break;
    if (m[1] !== project || m[2] !== '/') {
      redirect(res, `${index.prefix}${project}/`);
      return;
    }
    const pageWrongHash = fault === 'wrong-hash';
    const anchors = files.map((f) => {
      const wrong = pageWrongHash || faults[f.urlPath] === 'wrong-hash';
      const sha = wrong ? createHash('sha256').update(`not ${f.sha256}`).digest('hex') : f.sha256;
      return `<a href="${encodePath(f.urlPath)}#sha256=${sha}">${escapeHtml(f.name)}</a><br/>`;
    });
    sendPage(req, res, `Links for ${project}`, anchors, fault);
    return;
  }
  send(res, 404, 'text/plain', 'not found\n');
}

function encodePath(urlPath: string): string {
  // "+" (torch's local version label) is legal in a path, but encoded it survives any URL joining.
  return urlPath.split('/').map(encodeURIComponent).join('/');
}

function escapeHtml(s: string): string {
  return s.replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;').replace(/"/g, '&quot;');
}

function sendPage(req: http.IncomingMessage, res: http.ServerResponse, title: string, lines: string[], fault: Fault | undefined): void {
  if (fault === 'garbage') {
    send(res, 200, 'text/html', Buffer.from(garbage(512)), req.method === 'HEAD');
    return;
  }
  const body = [
    '<!DOCTYPE html>',
    '<html>',
    '<head><meta name="pypi:repository-version" content="1.0"><title>' + escapeHtml(title) + '</title></head>',
    '<body>',
    '<h1>' + escapeHtml(title) + '</h1>',
    ...lines,
    '</body>',
    '</html>',
    '',
  ].join('\n');
  send(res, 200, 'text/html; charset=utf-8', body, req.method === 'HEAD');
}

function sendFile(req: http.IncomingMessage, res: http.ServerResponse, served: Served, fault: Fault | undefined): void {
  res.statusCode = 200;
  res.setHeader('Content-Type', 'application/octet-stream');
  res.setHeader('Content-Length', served.size);
  if (req.method === 'HEAD') {
    res.end();
    return;
  }
  if (fault === 'garbage') {
    const chunk = garbage(64 * 1024);
    let left = served.size;
    const pump = (): void => {
      while (left > 0) {
        const n = Math.min(left, chunk.length);
        left -= n;
        if (!res.write(n === chunk.length ? chunk : chunk.subarray(0, n))) {
          res.once('drain', pump);
          return;
        }
      }
      res.end();
    };
    pump();
    return;
  }
  if (fault === 'slow') {
    const stream = fs.createReadStream(served.file, { highWaterMark: 256 * 1024 });
    stream.on('error', () => res.destroy());
    res.on('close', () => stream.destroy());
    // 256 KiB every 16 ms: about 16 MB/s.
    stream.on('data', (chunk) => {
      stream.pause();
      res.write(chunk);
      setTimeout(() => stream.resume(), 16);
    });
    stream.on('end', () => res.end());
    return;
  }
  const stream = fs.createReadStream(served.file);
  stream.on('error', () => res.destroy());
  stream.pipe(res);
}

function garbage(length: number): Buffer {
  const buf = Buffer.alloc(length);
  // Deterministic junk; never valid zip, HTML or JSON.
  for (let i = 0; i < length; i++) buf[i] = (i * 131 + 7) & 0xff;
  return buf;
}

function redirect(res: http.ServerResponse, location: string): void {
  res.statusCode = 301;
  res.setHeader('Location', encodePath(location));
  res.setHeader('Content-Length', 0);
  res.end();
}

function send(res: http.ServerResponse, status: number, type: string, body: string | Buffer, headOnly = false): void {
  const buf = typeof body === 'string' ? Buffer.from(body) : body;
  res.statusCode = status;
  res.setHeader('Content-Type', type);
  res.setHeader('Content-Length', buf.length);
  res.end(headOnly ? undefined : buf);
}

interface RunResult {
  code: number | null;
  stdout: string;
  stderr: string;
}

function run(cmd: string, args: string[], opts: { env: NodeJS.ProcessEnv; cwd?: string }): Promise<RunResult> {
  return new Promise((resolve, reject) => {
    const child = spawn(cmd, args, { env: opts.env, cwd: opts.cwd, stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout.setEncoding('utf8').on('data', (d: string) => (stdout += d));
    child.stderr.setEncoding('utf8').on('data', (d: string) => (stderr += d));
    child.on('error', reject);
    child.on('close', (code) => resolve({ code, stdout, stderr }));
  });
}

function tail(text: string, lines = 30): string {
  return text.trimEnd().split('\n').slice(-lines).join('\n');
}

const extraWheels = new Map<string, Promise<string[]>>();

/**
 * Wheels of `requirements` and everything they depend on, for CPython 3.11 x86_64, from pip's
 * local store, cached under os.tmpdir() by `label` like the torch fixture. For services whose
 * requirements go beyond torch's (transformers, for one).
 */
export function prepareStoreWheels(label: string, requirements: string[]): Promise<string[]> {
  // acceptedLegacyPlatforms() starts with manylinux_2_27: a python3.11 Lambda has glibc 2.26.
  if (!extraWheels.has(label)) {
    extraWheels.set(label, downloadStoreWheels(label, requirements).catch((error) => {
      extraWheels.delete(label);
      throw error;
    }));
  }
  return extraWheels.get(label)!;
}

async function downloadStoreWheels(label: string, requirements: string[]): Promise<string[]> {
  const finalDir = path.join(CACHE_ROOT, label);
  const listed = async (dir: string) => {
    const manifest = JSON.parse(await fsp.readFile(path.join(dir, MANIFEST), 'utf8').catch(() => 'null')) as Record<string, number> | null;
    if (!manifest) return null;
    for (const [file, size] of Object.entries(manifest)) {
      if ((await fsp.stat(path.join(dir, file)).catch(() => undefined))?.size !== size) return null;
    }
    return Object.keys(manifest).sort().map((file) => path.join(dir, file));
  };
  const cached = await listed(finalDir);
  if (cached) return cached;
  await fsp.mkdir(CACHE_ROOT, { recursive: true });
  const tmp = await fsp.mkdtemp(path.join(CACHE_ROOT, `.tmp-${label}-`));
  try {
    const args = [
      '-m', 'pip', 'download', ...requirements, '--only-binary=:all:',
      // What a python3.11 Lambda (Amazon Linux 2, glibc 2.26) runs: these wheels go into its layers.
      '--python-version', '3.11', '--implementation', 'cp', '--abi', 'cp311', ...acceptedLegacyPlatforms().slice(2),
      '--disable-pip-version-check', '-d', tmp, ...(await storeIndexArgs()),
    ];
    const res = await run(PYTHON, args, { env: process.env });
    if (res.code !== 0) throw new Error(`pip download of ${requirements.join(' ')} from the local wheel store failed (exit ${res.code}):\n${tail(res.stderr || res.stdout)}`);
    const sizes: Record<string, number> = {};
    for (const file of (await fsp.readdir(tmp)).filter((name) => name.endsWith('.whl'))) sizes[file] = (await fsp.stat(path.join(tmp, file))).size;
    await fsp.writeFile(path.join(tmp, MANIFEST), JSON.stringify(sizes));
    await fsp.chmod(tmp, 0o755);
    await fsp.rm(finalDir, { recursive: true, force: true });
    await fsp.rename(tmp, finalDir).catch(async (error) => {
      if (!(await listed(finalDir))) throw error;
    });
  } finally {
    await fsp.rm(tmp, { recursive: true, force: true });
  }
  return (await listed(finalDir))!;
}
