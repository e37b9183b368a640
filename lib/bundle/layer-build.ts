import * as fs from 'node:fs';
import * as path from 'node:path';
import { CacheLayout, cacheKey, commitEntry, readEntryJson } from '../util/cache';
import { DependencyTree } from '../resolve/dependency-tree';
import { formatBytes, formatSeconds } from '../util/format';
import { LayerPlan, UNZIPPED_LIMIT, planLayers, tooLarge } from './layer-plan';
import { Reporter } from '../util/reporter';
import { FileEntry, totalBytes } from '../util/file-tree';
import { PLUGIN_VERSION } from '../util/plugin-paths';
import { ZipEntry, writeZip } from '../zip/write';

/**
 * Files above this are split into parts so that several threads can inflate one file. Small
 * enough that the parts of libtorch_cpu.so (about 40) share out evenly over 2 to 6 vCPUs: with
 * 32 MiB parts one thread got a part more than the other.
 */
export const CHUNK_BYTES = 8 * 1024 * 1024;
/** Where uncompressed dependencies go inside a layer: Lambda puts /opt/python on sys.path. */
export const OPT_ROOT = 'python';
export const PACKED_DIR = 'serverless-torch';

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

/** The shim's instructions for unpacking, as README "Runtime layout" describes. */
export interface DepsManifest {
  format: 1;
  key: string;
  unpackedBytes: number;
  archives: string[];
  chunked: Record<string, { size: number; mode: number; parts: { archive: string; member: string; offset: number }[] }>;
  libraries: string[];
  optRoot: string;
}

const RECORD_FILE = 'layers.json';

function archiveEntries(
  treeDir: string,
  files: FileEntry[],
  archiveName: string,
): { entries: ZipEntry[]; chunked: DepsManifest['chunked'] } {
  const entries: ZipEntry[] = [];
  const chunked: DepsManifest['chunked'] = {};
  for (const file of files) {
    const source = path.join(treeDir, file.path);
    if (file.size <= CHUNK_BYTES) {
      entries.push({ name: file.path, source: { path: source }, executable: file.executable });
      continue;
    }
    const parts = [];
    for (let offset = 0, index = 0; offset < file.size; offset += CHUNK_BYTES, index++) {
      const member = `.parts/${file.path}.${String(index).padStart(3, '0')}`;
      entries.push({ name: member, source: { path: source, start: offset, end: Math.min(offset + CHUNK_BYTES, file.size) } });
      parts.push({ archive: archiveName, member, offset });
    }
    chunked[file.path] = { size: file.size, mode: file.executable ? 0o755 : 0o644, parts };
  }
  return { entries, chunked };
}

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
 * Plans and zips the layers for one dependency tree, or takes them from the cache. Zips are
 * deterministic, so an unchanged tree gives byte-identical layers that need no new upload.
 */
export async function buildLayers(options: {
  tree: DependencyTree;
  functionBytes: number;
  cache: CacheLayout;
  reporter: Reporter;
}): Promise<BuiltLayers> {
  const { tree, cache, reporter } = options;
  let plan = planLayers({ files: tree.files, functionBytes: options.functionBytes });
  const key = cacheKey({ plugin: PLUGIN_VERSION, tree: tree.key, reserve: plan.reservedForFunction, planning: 2 });
  const entryDir = cache.entry('artifacts', key);
  const cached = readEntryJson<BuiltLayers>(entryDir, RECORD_FILE);
  if (cached && cached.layers.every((layer) => fs.existsSync(path.join(entryDir, path.basename(layer.path))))) {
    reporter.verbose(`Layers for tree ${tree.key}: cached (${entryDir})`);
    return { ...cached, layers: cached.layers.map((layer) => ({ ...layer, path: path.join(entryDir, path.basename(layer.path)) })) };
  }
  const workDir = cache.workDir(`layers-${key}`);
  try {
    const started = Date.now();
    for (let attempt = 0; ; attempt++) {
      const stageDir = path.join(workDir, `attempt-${attempt}`);
      fs.mkdirSync(stageDir, { recursive: true });
      const built = await buildOnce(tree, plan, key, stageDir, reporter);
      const layerBytes = built.layers.reduce((sum, layer) => sum + layer.unzippedBytes, 0);
      const packedLayer = built.layers.find((layer) => layer.role === 'packed');
      if (attempt === 0 && packedLayer && layerBytes + plan.reservedForFunction <= UNZIPPED_LIMIT) {
        // The estimate was pessimistic: every byte compressed without need is inflated at each
        // cold start, so plan again with the ratio reached and build again when less is compressed.
        const measured = (packedLayer.unzippedBytes / built.compressedBytes) * 1.02;
        const tighter = measured < plan.compressionRatio ? planLayers({ files: tree.files, functionBytes: options.functionBytes, compressionRatio: measured }) : plan;
        if (totalBytes(tighter.compressed) < totalBytes(plan.compressed)) {
          reporter.verbose(`Compressed archive came out at ratio ${measured.toFixed(3)}; planning again to compress less`);
          plan = tighter;
          fs.rmSync(stageDir, { recursive: true, force: true });
          continue;
        }
      }
      if (layerBytes + plan.reservedForFunction <= UNZIPPED_LIMIT) {
        fs.writeFileSync(path.join(stageDir, RECORD_FILE), JSON.stringify({ ...built, layers: built.layers.map((layer) => ({ ...layer, path: path.basename(layer.path) })) }));
        commitEntry(stageDir, entryDir);
        reporter.verbose(`Built layers for tree ${tree.key} in ${formatSeconds(Date.now() - started)}`);
        return { ...built, layers: built.layers.map((layer) => ({ ...layer, path: path.join(entryDir, path.basename(layer.path)) })) };
      }
      // The estimate was optimistic: plan again with the ratio the archive really reached.
      const packed = built.layers.find((layer) => layer.role === 'packed');
      const measured = packed && built.compressedBytes ? (packed.unzippedBytes / built.compressedBytes) * 1.02 : 1;
      if (attempt >= 2 || measured >= 1) {
        throw tooLarge(tree.files, plan.reservedForFunction, packed?.unzippedBytes ?? layerBytes);
      }
      reporter.verbose(`Compressed archive came out at ratio ${measured.toFixed(3)}; planning again`);
      plan = planLayers({ files: tree.files, functionBytes: options.functionBytes, compressionRatio: measured });
      fs.rmSync(stageDir, { recursive: true, force: true });
    }
  } finally {
    fs.rmSync(workDir, { recursive: true, force: true });
  }
}
