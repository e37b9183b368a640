import * as fs from 'node:fs';
import * as path from 'node:path';
import { CacheLayout } from '../util/cache';
import { sha256File } from '../util/hash';
import { extractZip } from '../zip/read';

export interface LambdaLayout {
  root: string;
  taskRoot: string;
  optDir: string;
  tmpDir: string;
}

/** A layer's content on this machine: a zip, or a directory that is the layer's root. */
export type LocalLayer = { zip: string } | { dir: string };

/** A zip unzipped once into the cache, by content hash, so a second invoke unzips nothing. */
async function unzippedLayer(zip: string, cache: CacheLayout): Promise<string> {
  const digest = (await sha256File(zip)).slice(0, 24);
  const unpacked = path.join(cache.root, 'layouts', digest);
  if (fs.existsSync(unpacked)) return unpacked;
  const work = cache.workDir(`layout-${digest}`);
  await extractZip(zip, work);
  fs.mkdirSync(path.dirname(unpacked), { recursive: true });
  try {
    fs.renameSync(work, unpacked);
  } catch {
    // Another invoke unzipped it first: the same content.
    fs.rmSync(work, { recursive: true, force: true });
  }
  return unpacked;
}

/**
 * Lays one layer over /opt file by file, as Lambda does: a later layer replaces the files it
 * has and leaves the others of the same directory in place. Files are linked, not copied.
 */
function overlay(optDir: string, layerRoot: string): void {
  const walk = (from: string, to: string) => {
    for (const entry of fs.readdirSync(from, { withFileTypes: true })) {
      const source = path.join(from, entry.name);
      const target = path.join(to, entry.name);
      const existing = fs.lstatSync(target, { throwIfNoEntry: false });
      if (entry.isDirectory()) {
        if (existing && !existing.isDirectory()) fs.rmSync(target, { force: true });
        fs.mkdirSync(target, { recursive: true });
        walk(source, target);
      } else {
        if (existing) fs.rmSync(target, { recursive: true, force: true });
        fs.symlinkSync(source, target);
      }
    }
  };
  walk(layerRoot, optDir);
}

/**
 * Lays the artifacts out as Lambda does: the function zip in /var/task, every layer laid over
 * /opt in the order the function lists them, an empty /tmp.
 */
export async function layOut(options: {
  root: string;
  functionZip: string;
  layers: LocalLayer[];
  cache: CacheLayout;
}): Promise<LambdaLayout> {
  const layout = {
    root: options.root,
    taskRoot: path.join(options.root, 'var', 'task'),
    optDir: path.join(options.root, 'opt'),
    tmpDir: path.join(options.root, 'tmp'),
  };
  for (const dir of [layout.taskRoot, layout.optDir, layout.tmpDir]) fs.mkdirSync(dir, { recursive: true });
  await extractZip(options.functionZip, layout.taskRoot);
  for (const layer of options.layers) {
    overlay(layout.optDir, 'zip' in layer ? await unzippedLayer(layer.zip, options.cache) : path.resolve(layer.dir));
  }
  return layout;
}
