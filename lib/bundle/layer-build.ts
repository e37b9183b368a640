import * as fs from 'node:fs';
import * as path from 'node:path';
import { ResolvedConfig } from '../config/options';
import { DependencyTree } from '../resolve/dependency-tree';
import { CacheLayout, cacheKey, memo } from '../util/cache';
import { totalBytes } from '../util/file-tree';
import { formatBytes, formatSeconds } from '../util/format';
import { PLUGIN_VERSION } from '../util/plugin-paths';
import { Runner } from '../util/process';
import { Reporter } from '../util/reporter';
import { writeZip } from '../zip/write';
import { LEVELS, Compressor, openCompressor } from './compressor';
import { Codec, OPT_ROOT, PACKED_DIR, PackUnit, PackedUnit, depsManifest, manifestText, writeArchive } from './deps-archive';
import { LayerPlan, chooseUnits, layerPlan, movedLibraries, packUnits, reserveForFunction, tooLarge } from './layer-plan';
import { UNZIPPED_LIMIT } from './limits';

export interface LayerArtifact {
  /** "deps" (uncompressed, /opt/python) or "packed" (compressed, unpacked to /tmp). */
  role: 'deps' | 'packed';
  path: string;
  bytes: number;
  unzippedBytes: number;
  sha256: string;
}

/** How the compressed dependencies travel, for the report and --verbose. */
export interface Compression {
  codec: Codec;
  level: number;
  /** Why zlib rather than zstd; null with zstd. */
  fallback: string | null;
  archiveBytes: number;
  frames: number;
  /** What was compressed: library paths and top-level entries. */
  units: string[];
}

export interface BuiltLayers {
  key: string;
  layers: LayerArtifact[];
  /** Bytes the shim unpacks into /tmp at cold start. */
  tmpBytes: number;
  uncompressedBytes: number;
  compressedBytes: number;
  libraries: string[];
  reservedForFunction: number;
  /** Null when everything ships uncompressed. */
  compression: Compression | null;
}

const RECORD_FILE = 'layers.json';
/** Part of the cache key: a change to how layers are planned or laid out changes this. */
const PLANNING = 3;

/** Zips one plan: the uncompressed layer, and the layer holding the compressed archive and deps.json. */
async function zipLayers(tree: DependencyTree, plan: LayerPlan, key: string, codec: Codec, stageDir: string, reporter: Reporter): Promise<LayerArtifact[]> {
  const layers: LayerArtifact[] = [];
  if (plan.uncompressed.length) {
    reporter.progress(`Zipping ${formatBytes(totalBytes(plan.uncompressed))} of dependencies shipped uncompressed`);
    const result = await writeZip(
      path.join(stageDir, 'deps.zip'),
      plan.uncompressed.map((file) => ({ name: `${OPT_ROOT}/${file.path}`, source: { path: path.join(tree.dir, file.path) }, executable: file.executable })),
    );
    layers.push({ role: 'deps', path: result.path, bytes: result.bytes, unzippedBytes: result.unzippedBytes, sha256: result.sha256 });
  }
  if (plan.packed.length) {
    const manifest = depsManifest({ key, codec, packed: plan.packed, libraries: plan.libraries });
    const archivePath = path.join(stageDir, manifest.archive);
    writeArchive(archivePath, plan.packed);
    // The archive is already compressed: the layer stores it as is.
    const result = await writeZip(path.join(stageDir, 'packed.zip'), [
      { name: `${PACKED_DIR}/deps.json`, source: { data: manifestText(manifest) } },
      { name: `${PACKED_DIR}/${manifest.archive}`, source: { path: archivePath }, compress: false },
    ]);
    fs.rmSync(archivePath);
    layers.push({ role: 'packed', path: result.path, bytes: result.bytes, unzippedBytes: result.unzippedBytes, sha256: result.sha256 });
  }
  return layers;
}

/** Each unit compressed once per level, however many plans look at it. */
function measuring(compressor: Compressor, level: number, dir: string, treeDir: string): (units: PackUnit[]) => Promise<PackedUnit[]> {
  const done = new Map<string, PackedUnit>();
  return async (units) => {
    const fresh = units.filter((unit) => !done.has(unit.name));
    if (fresh.length) for (const packed of await compressor.pack(fresh, level, dir, treeDir)) done.set(packed.unit.name, packed);
    return units.map((unit) => done.get(unit.name)!);
  };
}

/**
 * The plan with the fewest bytes to unpack at the fastest-decoding level that fits, from
 * measured sizes: levels are tried in order, and at each the room kept for the function is first
 * rounded coarsely (stable layers), then finely. Refuses only when everything, compressed at the
 * last level, is measured not to fit.
 */
export async function planCompressed(options: {
  tree: DependencyTree;
  functionBytes: number;
  compressor: Compressor;
  key: string;
  workDir: string;
  reporter: Reporter;
}): Promise<{ plan: LayerPlan; level: number }> {
  const { tree, functionBytes, compressor, key, workDir, reporter } = options;
  const pinned = compressor.codec === 'zstd' && tree.decoder.codec === 'zstd' && tree.decoder.module === 'zstandard' ? tree.decoder.entries : [];
  const { units, pinnedFiles } = packUnits(tree.files, pinned);
  const overhead = (packed: PackedUnit[]) => manifestText(depsManifest({ key, codec: compressor.codec, packed, libraries: movedLibraries(packed) })).length;
  const levels = LEVELS[compressor.codec];
  if (totalBytes(pinnedFiles) + reserveForFunction(functionBytes, 'fine') > UNZIPPED_LIMIT) {
    // Certain without compressing anything: even an empty archive would not fit.
    throw tooLarge({ files: tree.files, functionBytes, measured: `and ${formatBytes(totalBytes(pinnedFiles))} must stay uncompressed (the zstd decoder)` });
  }
  let everything: PackedUnit[] = [];
  for (const level of levels) {
    const pack = measuring(compressor, level, path.join(workDir, `${compressor.codec}${level}`), tree.dir);
    for (const step of ['coarse', 'fine'] as const) {
      const reserved = reserveForFunction(functionBytes, step);
      const chosen = await chooseUnits({ units, fixedBytes: totalBytes(pinnedFiles), budget: UNZIPPED_LIMIT - reserved, overhead, pack });
      if (chosen) {
        reporter.verbose(explainChoice(compressor.codec, level, chosen, reserved, step));
        return { plan: layerPlan(tree.files, chosen, reserved), level };
      }
    }
    reporter.verbose(`${compressor.codec} level ${level}: even with every dependency compressed the function does not fit${level === levels[levels.length - 1] ? '' : '; trying the next level'}`);
    if (level === levels[levels.length - 1]) everything = await pack(units);
  }
  const archiveBytes = everything.reduce((sum, unit) => sum + unit.bytes, 0) + overhead(everything);
  throw tooLarge({
    files: tree.files,
    functionBytes,
    measured: `measured at ${formatBytes(archiveBytes)} compressed with ${compressor.codec} level ${levels[levels.length - 1]}, plus ${formatBytes(totalBytes(pinnedFiles))} that must stay uncompressed (the zstd decoder)`,
  });
}

function explainChoice(codec: Codec, level: number, chosen: PackedUnit[], reserved: number, step: 'coarse' | 'fine'): string {
  const raw = chosen.reduce((sum, unit) => sum + unit.unit.bytes, 0);
  const bytes = chosen.reduce((sum, unit) => sum + unit.bytes, 0);
  const largest = chosen.slice(0, 4).map((unit) => `${unit.unit.name} ${formatBytes(unit.unit.bytes)} → ${formatBytes(unit.bytes)}`);
  return (
    `Compressed with ${codec} level ${level} (the fastest to decode that fits, ${formatBytes(reserved)} kept for the function` +
    `${step === 'fine' ? ', rounded to 1 MiB as 16 MiB would not fit' : ''}): ${chosen.length} of the dependencies, ${formatBytes(raw)} → ${formatBytes(bytes)} ` +
    `(${(bytes / raw).toFixed(3)}), to unpack at cold start: ${largest.join(', ')}${chosen.length > 4 ? ', …' : ''}`
  );
}

/**
 * Plans and zips the layers for one dependency tree, or takes them from the cache. Zips are
 * deterministic, so an unchanged tree gives byte-identical layers that need no new upload.
 */
export async function buildLayers(options: {
  config: ResolvedConfig;
  tree: DependencyTree;
  functionBytes: number;
  cache: CacheLayout;
  runner: Runner;
  reporter: Reporter;
}): Promise<BuiltLayers> {
  const { config, tree, functionBytes, cache, runner, reporter } = options;
  const key = cacheKey({ plugin: PLUGIN_VERSION, tree: tree.key, reserve: reserveForFunction(functionBytes), planning: PLANNING });
  const started = Date.now();
  const { record, entryDir, reused } = await memo<BuiltLayers>({
    cache,
    kind: 'artifacts',
    key,
    recordFile: RECORD_FILE,
    // Layers planned with a finely rounded reserve hold only for a function that fits beside them.
    reusable: (cached, dir) =>
      cached.layers.every((layer) => fs.existsSync(path.join(dir, layer.path))) &&
      cached.layers.reduce((sum, layer) => sum + layer.unzippedBytes, 0) + functionBytes <= UNZIPPED_LIMIT,
    build: async (stageDir, workDir) => {
      const built = await buildOnce({ config, tree, functionBytes, key, stageDir, workDir, cache, runner, reporter });
      // The record names files relative to the entry, which is renamed into place after this.
      return { ...built, layers: built.layers.map((layer) => ({ ...layer, path: path.basename(layer.path) })) };
    },
  });
  reporter.verbose(reused ? `Layers for tree ${tree.key}: cached (${entryDir})` : `Built layers for tree ${tree.key} in ${formatSeconds(Date.now() - started)}`);
  return { ...record, layers: record.layers.map((layer) => ({ ...layer, path: path.join(entryDir, layer.path) })) };
}

async function buildOnce(options: {
  config: ResolvedConfig;
  tree: DependencyTree;
  functionBytes: number;
  key: string;
  stageDir: string;
  workDir: string;
  cache: CacheLayout;
  runner: Runner;
  reporter: Reporter;
}): Promise<BuiltLayers> {
  const { config, tree, functionBytes, key, stageDir, workDir, cache, runner, reporter } = options;
  const reserved = reserveForFunction(functionBytes);
  let plan: LayerPlan = { uncompressed: tree.files, packed: [], libraries: [], reservedForFunction: reserved };
  let compression: Compression | null = null;
  if (totalBytes(tree.files) + reserved > UNZIPPED_LIMIT) {
    const compressor = await openCompressor({ config, decoder: tree.decoder, treeDir: tree.dir, cache, runner, reporter });
    if (compressor.fallback) reporter.notice(`Compressed dependencies use zlib, not zstd: ${compressor.fallback}. A cold start unpacks them about 4 times slower.`);
    const planned = await planCompressed({ tree, functionBytes, compressor, key, workDir, reporter });
    plan = planned.plan;
    compression = {
      codec: compressor.codec,
      level: planned.level,
      fallback: compressor.fallback,
      archiveBytes: plan.packed.reduce((sum, unit) => sum + unit.bytes, 0),
      frames: plan.packed.reduce((sum, unit) => sum + unit.frames.length, 0),
      units: plan.packed.map((unit) => unit.unit.name),
    };
  }
  const layers = await zipLayers(tree, plan, key, compression?.codec ?? 'zstd', stageDir, reporter);
  const tmpBytes = plan.packed.reduce((sum, unit) => sum + unit.unit.bytes, 0);
  return {
    key,
    layers,
    tmpBytes,
    uncompressedBytes: totalBytes(plan.uncompressed),
    compressedBytes: tmpBytes,
    libraries: plan.libraries,
    reservedForFunction: plan.reservedForFunction,
    compression,
  };
}
