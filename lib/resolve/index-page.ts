import * as fs from 'node:fs';
import * as path from 'node:path';
import { TorchError } from '../util/errors';
import { SUPPORTED_RUNTIMES, TargetPlatform, runtimesWithGlibc } from './target';
import { compareReleases, releaseOf, satisfies } from './version';
import { WheelName, glibcOfTag, parseWheelName } from './wheel-name';

/** What an index answered for one project's page. */
export interface IndexPage {
  url: string;
  /** Set when the page could not be read or is not an index page. */
  problem: null | { kind: 'unreachable'; reason: string } | { kind: 'status'; status: number; statusText: string } | { kind: 'not-an-index'; bytes: number; contentType: string };
  wheels: WheelName[];
}

/** Reads a PEP 503 project page (http(s) or file://) the way pip does, keeping why it failed. */
export async function readIndexPage(indexUrl: string, project: string): Promise<IndexPage> {
  const url = `${indexUrl.replace(/\/+$/, '')}/${project}/`;
  let html = '';
  if (url.startsWith('file://')) {
    const dir = new URL(url).pathname;
    const indexFile = path.join(dir, 'index.html');
    try {
      html = fs.existsSync(indexFile) ? fs.readFileSync(indexFile, 'utf8') : fs.readdirSync(dir).map((f) => `<a href="${f}">`).join('');
    } catch (error) {
      return { url, problem: { kind: 'status', status: 404, statusText: (error as Error).message }, wheels: [] };
    }
  } else {
    let response: Response;
    try {
      response = await fetch(url, { signal: AbortSignal.timeout(30_000) });
    } catch (error) {
      const cause = (error as { cause?: { code?: string; message?: string } }).cause;
      return { url, problem: { kind: 'unreachable', reason: cause?.code ?? cause?.message ?? (error as Error).message }, wheels: [] };
    }
    if (!response.ok) return { url, problem: { kind: 'status', status: response.status, statusText: response.statusText }, wheels: [] };
    const body = Buffer.from(await response.arrayBuffer());
    html = body.toString('utf8');
    if (!/<a\s[^>]*href=/i.test(html)) {
      return { url, problem: { kind: 'not-an-index', bytes: body.length, contentType: response.headers.get('content-type') ?? 'no content type' }, wheels: [] };
    }
  }
  const wheels: WheelName[] = [];
  for (const match of html.matchAll(/href="([^"#]+)/g)) {
    const name = parseWheelName(decodeURIComponent(match[1].split('/').pop() ?? ''));
    if (name && name.project === project) wheels.push(name);
  }
  return { url, problem: null, wheels };
}

/** The error for an index page that could not be read: unreachable, an HTTP error, or not an index. */
export function indexPageError(indexUrl: string, option: string, page: IndexPage): TorchError {
  const problem = page.problem!;
  const fix = `Check ${option} (the CPU-only torch index is https://download.pytorch.org/whl/cpu) and any proxy in between.`;
  if (problem.kind === 'unreachable') {
    return new TorchError('TORCH_INDEX_UNREACHABLE', `${indexUrl} did not answer (${problem.reason} for ${page.url}). ${fix}`);
  }
  if (problem.kind === 'status') {
    return new TorchError(
      'TORCH_NOT_ON_INDEX',
      `${indexUrl} has no page for torch: ${page.url} answered ${problem.status} ${problem.statusText}. ${fix}`,
    );
  }
  return new TorchError(
    'TORCH_INDEX_INVALID',
    `${page.url} is not a package index page: it answered ${problem.bytes} bytes of ${problem.contentType} without a single link, ` +
      `so pip cannot find torch there. ${fix}`,
  );
}

/** Turns pip's "no matching distribution" into what is missing for this target and what would work. */
export function explainNoTorchWheel(indexUrl: string, target: TargetPlatform, specifier: string, wheels: WheelName[]): TorchError {
  const wanted = `torch${specifier || ' (any version)'}`;
  const where = `${target.runtime} ${target.architecture}`;
  if (wheels.length === 0) {
    return new TorchError(
      'TORCH_NO_WHEEL_FOR_PLATFORM',
      `No torch wheel was found on ${indexUrl} for ${where}. Check custom.torch.torchIndexUrl ` +
        '(the CPU-only index is https://download.pytorch.org/whl/cpu).',
    );
  }
  const matching = wheels.filter((wheel) => !specifier || satisfies(wheel.version, specifier));
  if (matching.length === 0) {
    const versions = [...new Set(wheels.map((wheel) => wheel.version))]
      .sort((a, b) => compareReleases(releaseOf(b), releaseOf(a)))
      .slice(0, 6);
    return new TorchError(
      'TORCH_VERSION_NOT_FOUND',
      `${indexUrl} has no ${wanted}. Newest versions there: ${versions.join(', ')}. ` +
        'Change the torch pin (the torch line of the requirements, or custom.torch.torchVersion).',
    );
  }
  const forPython = matching.filter((wheel) => wheel.pythonTags.includes(target.abi));
  if (forPython.length === 0) {
    const pythons = [...new Set(matching.flatMap((wheel) => wheel.pythonTags))].filter((tag) => /^cp3\d+$/.test(tag));
    const runtimes = SUPPORTED_RUNTIMES.filter((runtime) => pythons.includes(`cp${runtime.slice(6).replace('.', '')}`));
    return new TorchError(
      'TORCH_NO_WHEEL_FOR_RUNTIME',
      `${wanted} has no wheel for ${target.runtime} (${target.abi}) on ${indexUrl}. ` +
        (runtimes.length ? `Runtimes it has wheels for: ${runtimes.join(', ')}. ` : '') +
        'Change the runtime or the torch version.',
    );
  }
  const forMachine = forPython.filter((wheel) => wheel.platformTags.some((tag) => tag.endsWith(target.machine)));
  if (forMachine.length === 0) {
    return new TorchError(
      'TORCH_NO_WHEEL_FOR_ARCHITECTURE',
      `${wanted} has no ${target.machine} wheel for ${target.runtime} on ${indexUrl}. ` +
        `Use architecture ${target.architecture === 'arm64' ? 'x86_64' : 'arm64'} or another torch version.`,
    );
  }
  const needs = forMachine
    .flatMap((wheel) => wheel.platformTags.map(glibcOfTag))
    .filter((glibc): glibc is [number, number] => glibc !== null)
    .sort((a, b) => a[0] - b[0] || a[1] - b[1])[0];
  if (needs) {
    const runtimes = runtimesWithGlibc(needs);
    const example = forMachine[0];
    return new TorchError(
      'TORCH_NEEDS_NEWER_GLIBC',
      `${example.filename} needs glibc ${needs.join('.')} but ${target.runtime} runs on ${target.os} ` +
        `with glibc ${target.glibc.join('.')}, so torch ${example.version} cannot run there. ` +
        `Use runtime ${runtimes.join(' or ')} (Amazon Linux 2023), or pin a torch built for glibc ` +
        `${target.glibc.join('.')} (torch<=2.6 on x86_64, <=2.5 on arm64).`,
    );
  }
  return new TorchError(
    'TORCH_NO_WHEEL_FOR_PLATFORM',
    `pip found no ${wanted} for ${where} on ${indexUrl}, though the index lists ` +
      `${forMachine.map((wheel) => wheel.filename).slice(0, 3).join(', ')}. Run with --verbose to see pip's reasoning.`,
  );
}
