import * as fs from 'node:fs';
import { listTree, totalBytes } from '../util/file-tree';
import { readZipIndex } from '../zip/read';

/** A layer the user attaches to a function, as serverless.yml lets the plugin see it. */
export interface UserLayerSource {
  /** How serverless.yml names it: a service layer's key, or the ARN. */
  label: string;
  /**
   * `dir`: a service layer built from a directory (layers.X.path), whose contents are the layer;
   * `zip`: a service layer packaged beforehand (layers.X.package.artifact); `remote`: a layer
   * published elsewhere (an ARN), which this machine cannot see.
   */
  kind: 'dir' | 'zip' | 'remote';
  /** The directory or zip on this machine; absent for a remote layer. */
  location?: string;
}

export interface UserLayer extends UserLayerSource {
  /** Bytes it unzips to (Lambda counts them against the function's limit); null when remote. */
  unzippedBytes: number | null;
}

/** How much each of the user's own layers takes of Lambda's unzipped limit, where it can be known. */
export async function measureUserLayers(sources: UserLayerSource[]): Promise<UserLayer[]> {
  const measured: UserLayer[] = [];
  for (const source of sources) {
    let unzippedBytes: number | null = null;
    if (source.kind === 'zip' && source.location && fs.existsSync(source.location)) {
      unzippedBytes = (await readZipIndex(source.location)).reduce((sum, entry) => sum + entry.uncompressedSize, 0);
    } else if (source.kind === 'dir' && source.location && fs.existsSync(source.location)) {
      unzippedBytes = totalBytes(listTree(source.location));
    }
    measured.push({ ...source, unzippedBytes });
  }
  return measured;
}

/** Bytes of the layers that could be measured. */
export function knownLayerBytes(layers: UserLayer[]): number {
  return layers.reduce((sum, layer) => sum + (layer.unzippedBytes ?? 0), 0);
}
