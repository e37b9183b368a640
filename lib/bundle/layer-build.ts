import * as fs from 'node:fs';
import * as path from 'node:path';
import { CacheLayout, cacheKey, memo } from '../util/cache';
import { DependencyTree } from '../resolve/dependency-tree';
import { formatBytes, formatSeconds } from '../util/format';
import { LayerPlan, planLayers, tooLarge } from './layer-plan';
import { UNZIPPED_LIMIT } from './limits';
import { Reporter } from '../util/reporter';
import { totalBytes } from '../util/file-tree';
import { PLUGIN_VERSION } from '../util/plugin-paths';
import { writeZip } from '../zip/write';
import { DepsManifest, OPT_ROOT, PACKED_DIR, archiveEntries } from './deps-archive';

export interface LayerArtifact {
  /** "deps" (uncompressed, /opt/python) or "packed" (compressed, unpacked to /tmp). */
  role: 'deps' | 'packed';
  path: string;
  bytes: number;
  unzippedBytes: number;
  sha256: string;
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
}

const RECORD_FILE = 'layers.json';

/** Zips one plan: the uncompressed layer, and the layer holding the compressed archive and deps.json. */
async function buildOnce(
  tree: DependencyTree,
  plan: LayerPlan,
  key: string,
  stageDir: string,
  reporter: Reporter,
): Promise<BuiltLayers> {
  const layers: LayerArtifact[] = [];
  if (plan.uncompressed.length) {
    reporter.progress(`Zipping ${formatBytes(totalBytes(plan.uncompressed))} of dependencies shipped uncompressed`);
    const result = await writeZip(
      path.join(stageDir, 'deps.zip'),
      plan.uncompressed.map((file) => ({
        name: `${OPT_ROOT}/${file.path}`,
        source: { path: path.join(tree.dir, file.path) },
        executable: file.executable,
      })),
    );
    layers.push({ role: 'deps', path: result.path, bytes: result.bytes, unzippedBytes: result.unzippedBytes, sha256: result.sha256 });
  }
  let tmpBytes = 0;
  if (plan.compressed.length) {
    tmpBytes = totalBytes(plan.compressed);
    const archiveName = `deps-${key}-0.zip`;
    const { entries, chunked } = archiveEntries(tree.dir, plan.compressed, archiveName);
    reporter.progress(`Compressing ${formatBytes(tmpBytes)} of dependencies to unpack at cold start`);
    const archivePath = path.join(stageDir, archiveName);
    const archive = await writeZip(archivePath, entries);
    const manifest: DepsManifest = {
      format: 1,
      key,
      unpackedBytes: tmpBytes,
      archives: [archiveName],
      chunked,
      libraries: plan.libraries,
      optRoot: OPT_ROOT,
    };
    // The archive is already deflated: the layer stores it as is.
    const result = await writeZip(path.join(stageDir, 'packed.zip'), [
      { name: `${PACKED_DIR}/deps.json`, source: { data: Buffer.from(JSON.stringify(manifest, null, 1)) } },
      { name: `${PACKED_DIR}/${archiveName}`, source: { path: archive.path }, compress: false },
    ]);
    fs.rmSync(archivePath);
    layers.push({ role: 'packed', path: result.path, bytes: result.bytes, unzippedBytes: result.unzippedBytes, sha256: result.sha256 });
  }
  return {
    key,
    layers,
    tmpBytes,
    uncompressedBytes: totalBytes(plan.uncompressed),
    compressedBytes: tmpBytes,
    libraries: plan.libraries,
    reservedForFunction: plan.reservedForFunction,
  };
}

/**
 * The plan to build next once `built` is measured, or null when `built` is the one to keep. The
 * plan's compression ratio is an estimate: when the archive came out smaller, every byte
 * compressed without need would be inflated at each cold start, so a plan that compresses less is
 * tried once; when it came out larger than the room, the measured ratio is planned with again.
 */
function replan(tree: DependencyTree, functionBytes: number, plan: LayerPlan, built: BuiltLayers, attempt: number, reporter: Reporter): LayerPlan | null {
  const layerBytes = built.layers.reduce((sum, layer) => sum + layer.unzippedBytes, 0);
  const packed = built.layers.find((layer) => layer.role === 'packed');
  const measured = packed && built.compressedBytes ? (packed.unzippedBytes / built.compressedBytes) * 1.02 : 1;
  if (layerBytes + plan.reservedForFunction <= UNZIPPED_LIMIT) {
    if (attempt > 0 || !packed || measured >= plan.compressionRatio) return null;
    const tighter = planLayers({ files: tree.files, functionBytes, compressionRatio: measured });
    if (totalBytes(tighter.compressed) >= totalBytes(plan.compressed)) return null;
    reporter.verbose(`Compressed archive came out at ratio ${measured.toFixed(3)}; planning again to compress less`);
    return tighter;
  }
  if (attempt >= 2 || measured >= 1) throw tooLarge(tree.files, plan.reservedForFunction, packed?.unzippedBytes ?? layerBytes);
  reporter.verbose(`Compressed archive came out at ratio ${measured.toFixed(3)}; planning again`);
  return planLayers({ files: tree.files, functionBytes, compressionRatio: measured });
}

/**
 * Plans and zips the layers for one dependency tree, or takes them from the cache. Zips are
 * deterministic, so an unchanged tree gives byte-identical layers that need no new upload.
 */
export async function buildLayers(options: {
  tree: DependencyTree;
  functionBytes: number;
  cache: CacheLayout;
  reporter: Reporter;
}): Promise<BuiltLayers> {
  const { tree, functionBytes, cache, reporter } = options;
  const firstPlan = planLayers({ files: tree.files, functionBytes });
  const key = cacheKey({ plugin: PLUGIN_VERSION, tree: tree.key, reserve: firstPlan.reservedForFunction, planning: 2 });
  const started = Date.now();
  const { record, entryDir, reused } = await memo<BuiltLayers>({
    cache,
    kind: 'artifacts',
    key,
    recordFile: RECORD_FILE,
    reusable: (cached, dir) => cached.layers.every((layer) => fs.existsSync(path.join(dir, layer.path))),
    build: async (stageDir) => {
      let plan: LayerPlan | null = firstPlan;
      for (let attempt = 0; ; attempt++) {
        fs.rmSync(stageDir, { recursive: true, force: true });
        fs.mkdirSync(stageDir);
        const built = await buildOnce(tree, plan, key, stageDir, reporter);
        plan = replan(tree, functionBytes, plan, built, attempt, reporter);
        // The record names files relative to the entry, which is renamed into place after this.
        if (!plan) return { ...built, layers: built.layers.map((layer) => ({ ...layer, path: path.basename(layer.path) })) };
      }
    },
  });
  reporter.verbose(reused ? `Layers for tree ${tree.key}: cached (${entryDir})` : `Built layers for tree ${tree.key} in ${formatSeconds(Date.now() - started)}`);
  return { ...record, layers: record.layers.map((layer) => ({ ...layer, path: path.join(entryDir, layer.path) })) };
}
