import * as fs from 'node:fs';
import { TorchError } from '../util/errors';
import { readZipEntry, readZipIndex } from '../zip/read';
import { scanLegacyCheckpoint, scanPickle } from './pickle-globals';

// Globals a weights-only load accepts (tensors, storages, containers). A checkpoint that names
// any other class is a pickled module: loading it runs code, so it needs the explicit pickle loader.
const WEIGHTS_ONLY_MODULES = /^(torch|torch\._utils|torch\._tensor|torch\.storage|torch\.serialization|collections|builtins|__builtin__|_codecs)$/;

/** The classes among a pickle's globals that a weights-only load refuses. */
export function unsafeClasses(globals: string[]): string[] {
  const classes = globals.filter((global) => !WEIGHTS_ONLY_MODULES.test(global.slice(0, global.lastIndexOf('.'))));
  return [...new Set(classes)];
}

// The pickles at the head of a legacy checkpoint are small; its storages follow them.
const LEGACY_HEAD_BYTES = 64 * 1024 * 1024;

/** The unsafe classes of a legacy (non-zip) torch.save file, read from its head. */
function legacyClasses(sourcePath: string, packagePath: string): string[] {
  const fd = fs.openSync(sourcePath, 'r');
  let head: Buffer;
  try {
    const size = Math.min(fs.fstatSync(fd).size, LEGACY_HEAD_BYTES);
    head = Buffer.alloc(size);
    fs.readSync(fd, head, 0, size, 0);
  } finally {
    fs.closeSync(fd);
  }
  try {
    return unsafeClasses(scanLegacyCheckpoint(head));
  } catch (error) {
    throw new TorchError(
      'TORCH_MODEL_UNKNOWN_FORMAT',
      `custom.torch.model ${packagePath} starts like a legacy torch.save file but is not one (${(error as Error).message}). ` +
        'Save the model again with torch.save.',
      { cause: error },
    );
  }
}

/** What the model file is, read from its bytes: never from its name. */
export interface ModelFormat {
  kind: 'torchscript' | 'checkpoint' | 'legacy-pickle';
  /** Classes a checkpoint's pickle names beyond what a weights-only load accepts: a pickled module. */
  classes: string[];
}

/** Tells a TorchScript archive from a torch.save checkpoint (zip or legacy pickle), or refuses anything else. */
export async function sniffFormat(sourcePath: string, packagePath: string): Promise<ModelFormat> {
  const head = Buffer.alloc(4);
  const fd = fs.openSync(sourcePath, 'r');
  try {
    fs.readSync(fd, head, 0, 4, 0);
  } finally {
    fs.closeSync(fd);
  }
  if (head[0] === 0x80) return { kind: 'legacy-pickle', classes: legacyClasses(sourcePath, packagePath) };
  if (head.readUInt32LE(0) !== 0x04034b50) {
    throw new TorchError(
      'TORCH_MODEL_UNKNOWN_FORMAT',
      `custom.torch.model ${packagePath} is not a file torch.save or torch.jit.save wrote (it starts with ` +
        `0x${head.toString('hex')}). Save the model with torch.save(model.state_dict(), path) or torch.jit.save.`,
    );
  }
  let names: string[];
  try {
    names = (await readZipIndex(sourcePath)).map((entry) => entry.name);
  } catch (error) {
    throw new TorchError(
      'TORCH_MODEL_UNKNOWN_FORMAT',
      `custom.torch.model ${packagePath} is a damaged zip file (${(error as Error).message}). Save the model again.`,
      { cause: error },
    );
  }
  if (names.some((name) => /^[^/]+\/constants\.pkl$/.test(name)) && names.some((name) => /^[^/]+\/code\//.test(name))) {
    return { kind: 'torchscript', classes: [] };
  }
  const dataPickle = names.find((name) => /^[^/]+\/data\.pkl$/.test(name));
  if (!dataPickle) {
    throw new TorchError(
      'TORCH_MODEL_UNKNOWN_FORMAT',
      `custom.torch.model ${packagePath} is a zip file but not a torch checkpoint (no data.pkl inside). ` +
        'Save the model with torch.save or torch.jit.save.',
    );
  }
  let globals: string[];
  try {
    globals = scanPickle(await readZipEntry(sourcePath, dataPickle)).globals;
  } catch (error) {
    throw new TorchError(
      'TORCH_MODEL_UNKNOWN_FORMAT',
      `custom.torch.model ${packagePath} has a damaged ${dataPickle} (${(error as Error).message}). Save the model again.`,
      { cause: error },
    );
  }
  return { kind: 'checkpoint', classes: unsafeClasses(globals) };
}
