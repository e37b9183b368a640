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
function legacyClasses(sourcePath: string, label: string): string[] {
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
      `${label} starts like a legacy torch.save file but is not one (${(error as Error).message}). ` +
        'Save the model again with torch.save.',
      { cause: error },
    );
  }
}

/** What the model is, read from its bytes and layout: never from its name. */
export type ModelFormat =
  | { kind: 'torchscript' | 'export' | 'safetensors' }
  /** A torch.save file (zip or legacy), with the classes its pickle names that a weights-only load refuses. */
  | { kind: 'checkpoint' | 'legacy-pickle'; classes: string[] }
  /** A directory: a Hugging Face model when it has config.json; its weights in safetensors or not. */
  | { kind: 'directory'; huggingFace: boolean; safetensors: boolean };

function readHead(file: string, bytes: number): Buffer {
  const head = Buffer.alloc(bytes);
  const fd = fs.openSync(file, 'r');
  try {
    return head.subarray(0, fs.readSync(fd, head, 0, bytes, 0));
  } finally {
    fs.closeSync(fd);
  }
}

/** A safetensors file starts with the length of its JSON header (little-endian u64), then the header. */
function isSafetensors(head: Buffer, size: number): boolean {
  if (head.length < 9) return false;
  const headerBytes = head.readBigUInt64LE(0);
  return headerBytes > 1n && headerBytes < BigInt(size) && head[8] === 0x7b;
}

function unknownFormat(label: string, detail: string): TorchError {
  return new TorchError(
    'TORCH_MODEL_UNKNOWN_FORMAT',
    `${label} ${detail}. Save the model with torch.save(model.state_dict(), path), torch.jit.save, torch.export.save or ` +
      'safetensors, or point the option at a Hugging Face model directory.',
  );
}

/** Tells the formats torch writes apart: TorchScript, torch.export, a zip checkpoint. */
async function zipFormat(sourcePath: string, label: string): Promise<ModelFormat> {
  let names: string[];
  try {
    names = (await readZipIndex(sourcePath)).map((entry) => entry.name);
  } catch (error) {
    throw new TorchError('TORCH_MODEL_UNKNOWN_FORMAT', `${label} is a damaged zip file (${(error as Error).message}). Save the model again.`, { cause: error });
  }
  // torch.export.save writes an archive_format file ("pt2") at the top of the archive's folder.
  if (names.some((name) => /^[^/]+\/archive_format$/.test(name))) return { kind: 'export' };
  if (names.some((name) => /^[^/]+\/constants\.pkl$/.test(name)) && names.some((name) => /^[^/]+\/code\//.test(name))) {
    return { kind: 'torchscript' };
  }
  const dataPickle = names.find((name) => /^[^/]+\/data\.pkl$/.test(name));
  if (!dataPickle) throw unknownFormat(label, 'is a zip file but not a torch checkpoint (no data.pkl inside)');
  let globals: string[];
  try {
    globals = scanPickle(await readZipEntry(sourcePath, dataPickle)).globals;
  } catch (error) {
    throw new TorchError('TORCH_MODEL_UNKNOWN_FORMAT', `${label} has a damaged ${dataPickle} (${(error as Error).message}). Save the model again.`, { cause: error });
  }
  return { kind: 'checkpoint', classes: unsafeClasses(globals) };
}

/** What the model at `sourcePath` is; `label` names it in errors ("functions.embed.torch.model models/x"). */
export async function sniffFormat(sourcePath: string, label: string): Promise<ModelFormat> {
  const stat = fs.statSync(sourcePath);
  if (stat.isDirectory()) {
    const names = fs.readdirSync(sourcePath);
    return { kind: 'directory', huggingFace: names.includes('config.json'), safetensors: names.some((name) => name.endsWith('.safetensors')) };
  }
  const head = readHead(sourcePath, 16);
  if (isSafetensors(head, stat.size)) return { kind: 'safetensors' };
  if (head[0] === 0x80) return { kind: 'legacy-pickle', classes: legacyClasses(sourcePath, label) };
  if (head.length < 4 || head.readUInt32LE(0) !== 0x04034b50) throw unknownFormat(label, `is not a model file torch or safetensors wrote (it starts with 0x${head.subarray(0, 4).toString('hex')})`);
  return zipFormat(sourcePath, label);
}
