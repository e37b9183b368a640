import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { ResolvedConfig } from '../config/options';
import { TreeDecoder } from '../resolve/decoder';
import { HostPackage, ensureHostPackage, hostPythonArgs } from '../resolve/host-package';
import { lastLines } from '../resolve/pip-failure';
import { CacheLayout } from '../util/cache';
import { isTorchError } from '../util/errors';
import { formatBytes } from '../util/format';
import { sha256 } from '../util/hash';
import { BUILD_SCRIPTS_DIR } from '../util/plugin-paths';
import { Runner } from '../util/process';
import { Reporter } from '../util/reporter';
import { Codec, FRAME_BYTES, PackUnit, PackedUnit } from './deps-archive';

const COMPRESS_SCRIPT = path.join(BUILD_SCRIPTS_DIR, 'compress.py');

/**
 * Levels tried in order, fastest to decode first: the plan takes the first level at which the
 * function and its layers fit, so a cold start inflates as fast as the room allows. Measured on
 * the stripped libtorch_cpu.so of torch 2.13 in 8 MiB frames, one core (README "Performance"):
 * zstd -1 / 1 / 3 / 9 / 19 compress to 0.354 / 0.315 / 0.271 / 0.246 / 0.219 of it and decode
 * at about 1,500 / 1,300 / 1,100 / 1,000 / 850 MB/s; 9 takes 9 s to encode, 19 takes 190 s (the
 * price of the last 11% of room, paid only when nothing else fits). Levels in between gain too
 * little: 12 and 15 compress the whole torch tree to 0.236 and 0.235, against 0.239 at 9.
 * zlib (no zstd decoder for the target) has one level: 9 gains 0.6% over 6 at 2.7 times the time.
 */
export const LEVELS: Record<Codec, number[]> = { zstd: [-1, 1, 3, 9, 19], zlib: [6] };

export interface Compressor {
  codec: Codec;
  /** Why zlib is used instead of zstd, for the report; null with zstd. */
  fallback: string | null;
  /** The host zstandard, or null for zlib (the interpreter's own). */
  host: HostPackage | null;
  /** Compresses each unit into its own file of frames under `dir`, at `level`. */
  pack(units: PackUnit[], level: number, dir: string, treeDir: string): Promise<PackedUnit[]>;
}

/**
 * The target's own zstandard, when this machine's interpreter imports it: the build machine is
 * then of the target's Python version and processor (the usual case), and no host copy needs
 * installing (measured 4 to 9 s of a cold package here).
 */
async function treeZstandard(config: ResolvedConfig, decoder: TreeDecoder, treeDir: string | undefined, runner: Runner): Promise<HostPackage | null> {
  if (!treeDir || decoder.codec !== 'zstd' || decoder.module !== 'zstandard') return null;
  const probe = `import sys; sys.path[:0] = [${JSON.stringify(treeDir)}]; import zstandard, platform; print("%d.%d" % sys.version_info[:2])`;
  const result = await runner(config.python, ['-I', '-S', '-c', probe]).catch(() => null);
  if (!result || result.code !== 0) return null;
  return { python: config.python, pythonVersion: result.stdout.trim(), version: decoder.version, sitePath: treeDir };
}

/**
 * zstd when the target can decode it (its zstandard wheel ships in the tree, or python3.14) and
 * this machine can encode it (the tree's own zstandard when it imports here, else a host copy
 * installed into the cache like the host torch); otherwise zlib, and the reason goes in the report.
 */
export async function openCompressor(options: {
  config: ResolvedConfig;
  decoder: TreeDecoder;
  /** The dependency tree, whose zstandard may do for this machine too. @default a host copy */
  treeDir?: string;
  cache: CacheLayout;
  runner: Runner;
  reporter: Reporter;
}): Promise<Compressor> {
  const { config, decoder, cache, runner, reporter } = options;
  let host: HostPackage | null = null;
  let fallback: string | null = decoder.codec === 'zlib' ? decoder.reason : null;
  if (!fallback) host = await treeZstandard(config, decoder, options.treeDir, runner);
  if (host) reporter.verbose(`Compressing with the target's own zstandard ${host.version}: ${config.python} imports it`);
  if (!fallback && !host) {
    try {
      host = await ensureHostPackage({
        config,
        request: { project: 'zstandard', version: null, purpose: 'compressing the dependencies with zstd' },
        cache,
        runner,
        reporter,
      });
    } catch (error) {
      if (!isTorchError(error) || error.code !== 'TORCH_NO_HOST_WHEEL') throw error;
      fallback = `this machine's ${config.python} has no zstandard wheel on the indexes to compress with`;
    }
  }
  const codec: Codec = fallback ? 'zlib' : 'zstd';
  return {
    codec,
    fallback,
    host,
    pack: (units, level, dir, treeDir) => runCompress({ config, host, codec, level, units, dir, treeDir, runner, reporter }),
  };
}

/** Runs python/build/compress.py over the units; it writes one file of frames per unit. */
async function runCompress(options: {
  config: ResolvedConfig;
  host: HostPackage | null;
  codec: Codec;
  level: number;
  units: PackUnit[];
  dir: string;
  treeDir: string;
  runner: Runner;
  reporter: Reporter;
}): Promise<PackedUnit[]> {
  const { host, codec, level, units, dir, treeDir, runner, reporter } = options;
  fs.mkdirSync(dir, { recursive: true });
  // Named after the unit: the plan measures units in batches, and each keeps its own file.
  const outputs = units.map((unit) => path.join(dir, `${unit.kind}-${sha256(unit.name).slice(0, 16)}.${codec}${level}`));
  const batch = fs.readdirSync(dir).filter((name) => name.startsWith('job-')).length;
  const jobFile = path.join(dir, `job-${batch}.json`);
  const resultFile = path.join(dir, `result-${batch}.json`);
  fs.writeFileSync(
    jobFile,
    JSON.stringify({
      sysPath: host?.sitePath ? [host.sitePath] : [],
      codec,
      level,
      frameBytes: FRAME_BYTES,
      threads: os.availableParallelism(),
      units: units.map((unit, index) => ({ out: outputs[index], files: unit.files.map((file) => [path.join(treeDir, file.path), file.size]) })),
    }),
  );
  const total = units.reduce((sum, unit) => sum + unit.bytes, 0);
  const label = `${codec} level ${level}`;
  reporter.progress(`Compressing ${formatBytes(total)} with ${label}`);
  const python = host?.python ?? options.config.python;
  const run = await runner(python, [...(host ? hostPythonArgs(host) : ['-I', '-S']), COMPRESS_SCRIPT, jobFile, resultFile], {
    onLine: (line) => {
      const progress = /^progress (\d+) (\d+)$/.exec(line);
      if (progress) reporter.progress(`Compressing ${formatBytes(total)} with ${label}: ${Math.round((Number(progress[1]) / Number(progress[2])) * 100)}%`);
    },
  });
  if (run.code !== 0 || !fs.existsSync(resultFile)) {
    throw new Error(`${python} ${COMPRESS_SCRIPT} failed (exit ${run.code}): ${lastLines(run.stderr, 6)}`);
  }
  const result = JSON.parse(fs.readFileSync(resultFile, 'utf8')) as { units: { bytes: number; frames: [number, number][] }[]; encoder: string };
  reporter.verbose(`Compressed ${units.length} ${units.length === 1 ? 'unit' : 'units'} (${formatBytes(total)}) with ${result.encoder} at level ${level}`);
  return units.map((unit, index) => ({ unit, path: outputs[index], bytes: result.units[index].bytes, frames: result.units[index].frames }));
}
