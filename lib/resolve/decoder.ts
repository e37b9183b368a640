import * as fs from 'node:fs';
import * as path from 'node:path';
import { ResolvedConfig } from '../config/options';
import { normaliseProjectName } from '../util/project-name';
import { Runner } from '../util/process';
import { QUIET_ARGS, indexArgs, targetArgs } from './pip-args';
import { knownPipFailure, pipFailure } from './pip-failure';
import { TargetPlatform } from './target';
import { parseWheelName } from './wheel-name';

/** The project whose module decodes zstd at cold start on runtimes without compression.zstd. */
export const DECODER_PROJECT = 'zstandard';

/**
 * How the shim decodes a target's compressed dependencies. zstd needs a decoder importable before
 * anything is unpacked: python3.14's compression.zstd, or the target's own zstandard wheel, which
 * then ships uncompressed under /opt/python. Without either, zlib (the standard library's).
 */
export type TreeDecoder =
  | { codec: 'zstd'; module: 'compression.zstd' }
  | {
      codec: 'zstd';
      module: 'zstandard';
      version: string;
      /** Top-level entries of the tree that hold it: they must ship uncompressed. */
      entries: string[];
      /** False when the user's requirements name zstandard themselves. */
      added: boolean;
    }
  | { codec: 'zlib'; reason: string };

/** python3.14 has compression.zstd in the standard library. */
export function hasStdlibZstd(target: TargetPlatform): boolean {
  const [major, minor] = target.pythonVersion.split('.').map(Number);
  return major > 3 || (major === 3 && minor >= 14);
}

/** True when a requirement line names the decoder's project (the user's version then wins). */
export function namesDecoder(lines: string[]): boolean {
  return lines.some((line) => {
    const name = /^([A-Za-z0-9][A-Za-z0-9._-]*)/.exec(line);
    return name !== null && !line.startsWith('-') && normaliseProjectName(name[1]) === DECODER_PROJECT;
  });
}

/**
 * The target's zstandard wheel, downloaded alone for the target's exact tags (pip checks it
 * against the sha256 its index lists), or why there is none. Index failures are errors, as for
 * any requirement; only "no wheel for this target" falls back to zlib.
 */
export async function downloadDecoderWheel(options: {
  config: ResolvedConfig;
  target: TargetPlatform;
  workDir: string;
  configuredExtras: string[];
  runner: Runner;
  onLine?: (line: string) => void;
}): Promise<{ path: string; version: string } | { reason: string }> {
  const { config, target, workDir, runner } = options;
  const dest = path.join(workDir, 'decoder-wheel');
  fs.mkdirSync(dest, { recursive: true });
  const index = config.indexUrl ?? "pip's configured indexes";
  const result = await runner(
    config.python,
    ['-m', 'pip', 'download', ...QUIET_ARGS, '--no-deps', ...targetArgs(target), ...indexArgs(config, options.configuredExtras), '--dest', dest, DECODER_PROJECT],
    { onLine: options.onLine },
  );
  if (result.code !== 0) {
    const output = `${result.stdout}\n${result.stderr}`;
    if (/No matching distribution|Could not find a version/.test(output)) {
      return { reason: `${index} has no ${DECODER_PROJECT} wheel for ${target.runtime} ${target.architecture}` };
    }
    throw knownPipFailure(`download ${DECODER_PROJECT}`, index, output, dest) ?? pipFailure(`download ${DECODER_PROJECT}`, index, output, dest);
  }
  const wheel = fs.readdirSync(dest).map(parseWheelName).find((name) => name?.project === DECODER_PROJECT);
  if (!wheel) throw pipFailure(`download ${DECODER_PROJECT}`, index, result.stdout + result.stderr, dest);
  return { path: path.join(dest, wheel.filename), version: wheel.version };
}

/** What installing the dependencies adds for the decoder. */
export type DecoderChoice =
  | { kind: 'stdlib' }
  | { kind: 'requirements' }
  | { kind: 'wheel'; path: string; version: string }
  | { kind: 'none'; reason: string };

/** Before pip installs the tree: how the target will decode zstd, and the wheel to install for it. */
export async function chooseDecoder(options: {
  config: ResolvedConfig;
  target: TargetPlatform;
  otherLines: string[];
  workDir: string;
  configuredExtras: string[];
  runner: Runner;
  onLine?: (line: string) => void;
}): Promise<DecoderChoice> {
  if (hasStdlibZstd(options.target)) return { kind: 'stdlib' };
  if (namesDecoder(options.otherLines)) return { kind: 'requirements' };
  const wheel = await downloadDecoderWheel(options);
  return 'reason' in wheel ? { kind: 'none', reason: wheel.reason } : { kind: 'wheel', ...wheel };
}

/** After pip installed the tree: the decoder the shim will import, found in the tree. */
export function treeDecoder(choice: DecoderChoice, treeDir: string): TreeDecoder {
  if (choice.kind === 'stdlib') return { codec: 'zstd', module: 'compression.zstd' };
  if (choice.kind === 'none') return { codec: 'zlib', reason: choice.reason };
  const distInfo = fs.readdirSync(treeDir).find((name) => name.startsWith(`${DECODER_PROJECT}-`) && name.endsWith('.dist-info'));
  if (!distInfo || !fs.existsSync(path.join(treeDir, DECODER_PROJECT, '__init__.py'))) {
    // The user's line did not install it for this target (an environment marker, say).
    return { codec: 'zlib', reason: `the requirements name ${DECODER_PROJECT}, but pip installed none for this runtime` };
  }
  return {
    codec: 'zstd',
    module: 'zstandard',
    version: distInfo.slice(DECODER_PROJECT.length + 1, -'.dist-info'.length),
    entries: [DECODER_PROJECT],
    added: choice.kind === 'wheel',
  };
}
