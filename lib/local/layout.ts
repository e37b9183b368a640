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


/**
 * Lays the artifacts out as Lambda does: the function zip in /var/task, the layers merged into
 * /opt in order, an empty /tmp. Layers are unzipped once into the cache (by content hash) and
 * linked in, so a second invoke does not unzip hundreds of megabytes again.
 */
export async function layOut(options: {
  root: string;
  functionZip: string;
  layerZips: string[];
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
  for (const layerZip of options.layerZips) {
    const digest = (await sha256File(layerZip)).slice(0, 24);
    const unpacked = path.join(options.cache.root, 'layouts', digest);
    if (!fs.existsSync(unpacked)) {
      const work = options.cache.workDir(`layout-${digest}`);
      await extractZip(layerZip, work);
      fs.mkdirSync(path.dirname(unpacked), { recursive: true });
      try {
        fs.renameSync(work, unpacked);
      } catch {
        fs.rmSync(work, { recursive: true, force: true });
      }
    }
    // Later layers win for the same path, as on Lambda.
    for (const name of fs.readdirSync(unpacked)) {
      const link = path.join(layout.optDir, name);
      fs.rmSync(link, { recursive: true, force: true });
      fs.symlinkSync(path.join(unpacked, name), link);
    }
  }
  return layout;
}
