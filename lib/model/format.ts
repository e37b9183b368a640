import * as fs from 'node:fs';
import { TorchError } from '../util/errors';
import { readZipEntry, readZipIndex } from '../zip/read';

// Globals a weights-only load accepts (tensors, storages, containers). A checkpoint that names
// any other class is a pickled module: loading it runs code, so it needs the explicit pickle loader.
const WEIGHTS_ONLY_MODULES = /^(torch|torch\._utils|torch\._tensor|torch\.storage|torch\.serialization|collections|builtins|__builtin__|_codecs)$/;

export function picklesClasses(pickle: Buffer): string[] {
  const text = pickle.toString('latin1');
  const classes = new Set<string>();
  for (const match of text.matchAll(/c([A-Za-z_][\w.]*)\n([A-Za-z_][\w.]*)\n/g)) {
    if (!WEIGHTS_ONLY_MODULES.test(match[1])) classes.add(`${match[1]}.${match[2]}`);
  }
  return [...classes];
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
  if (head[0] === 0x80) return { kind: 'legacy-pickle', classes: [] };
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
  return { kind: 'checkpoint', classes: picklesClasses(await readZipEntry(sourcePath, dataPickle)) };
}
