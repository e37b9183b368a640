import { TorchError } from '../util/errors';

/** Lambda's limit on a function's code plus all its layers, unzipped, in bytes (a single layer has the same limit). */
export const UNZIPPED_LIMIT = 262_144_000;
/** Layers a function may have. */
export const MAX_LAYERS = 5;
/** /tmp a function has unless ephemeralStorageSize raises it (up to 10,240 MB). */
export const DEFAULT_TMP_MB = 512;

/** /tmp the function needs, in MB as `ephemeralStorageSize` counts them, with room for the user. */
export function ephemeralStorageNeeded(tmpBytes: number): number {
  const headroom = 64 * 1024 * 1024;
  return Math.max(DEFAULT_TMP_MB, Math.ceil((tmpBytes + headroom) / (1024 * 1024)));
}

/** Refuses a function whose own layers leave no room for `ours` more within Lambda's five. */
export function checkLayerCount(functionName: string, userLayers: number, ours: number): void {
  if (userLayers + ours <= MAX_LAYERS) return;
  throw new TorchError(
    'TORCH_TOO_MANY_LAYERS',
    `Function "${functionName}" already has ${userLayers} layers; serverless-torch needs ${ours} more ` +
      `and Lambda allows ${MAX_LAYERS} in all. Remove ${userLayers + ours - MAX_LAYERS} of its layers ` +
      '(their Python packages can go in requirements.txt instead).',
  );
}
