import { TorchError } from '../util/errors';
import { formatBytes } from '../util/format';
import { FileEntry, topLevel, totalBytes } from '../util/file-tree';
import { UNZIPPED_LIMIT } from './limits';


/** Which files ship as they are under /opt/python and which travel compressed to /tmp. */
export interface LayerPlan {
  uncompressed: FileEntry[];
  compressed: FileEntry[];
  /** Shared libraries moved out of a package that otherwise ships uncompressed (preloaded by the shim). */
  libraries: string[];
  /** Bytes the plan assumed the function package (code and model) may take. */
  reservedForFunction: number;
  /** Bytes the plan assumed the compressed archive takes, from `compressionRatio`. */
  estimatedArchiveBytes: number;
  compressionRatio: number;
}

// Shared libraries loaded by soname (DT_NEEDED), which can live elsewhere once preloaded.
// Python extension modules are imported by path and must stay inside their package.
function isMovableLibrary(file: FileEntry): boolean {
  const name = file.path.split('/').pop() ?? '';
  return /^lib[^/]*\.so(\.\d+)*$/.test(name) && !/\.(cpython-|abi3|pypy)/.test(name);
}

interface Unit {
  kind: 'library' | 'package';
  name: string;
  files: FileEntry[];
  bytes: number;
}

/**
 * Room kept for the function package. Rounded up, so that small code changes do not change the
 * plan: the layers (and their zips) then stay byte-identical and are not uploaded again.
 */
export function reserveForFunction(functionBytes: number): number {
  const step = 16 * 1024 * 1024;
  return Math.ceil((functionBytes + 8 * 1024 * 1024) / step) * step;
}

/**
 * Ships as much as fits under the unzipped limit uncompressed (imported in place, nothing to
 * unpack) and compresses the rest, largest first: whole shared libraries before whole packages,
 * so Python files stay importable from /opt and cold start unpacks a few big files.
 */
export function planLayers(options: {
  files: FileEntry[];
  functionBytes: number;
  compressionRatio?: number;
  limit?: number;
}): LayerPlan {
  const limit = options.limit ?? UNZIPPED_LIMIT;
  const ratio = options.compressionRatio ?? 0.4;
  const reservedForFunction = reserveForFunction(options.functionBytes);
  const budget = limit - reservedForFunction;
  const total = totalBytes(options.files);
  if (total <= budget) {
    return { uncompressed: options.files, compressed: [], libraries: [], reservedForFunction, estimatedArchiveBytes: 0, compressionRatio: ratio };
  }
  const packages = new Map<string, FileEntry[]>();
  for (const file of options.files) {
    const name = topLevel(file.path);
    packages.set(name, [...(packages.get(name) ?? []), file]);
  }
  const libraryUnits: Unit[] = options.files
    .filter(isMovableLibrary)
    .map((file) => ({ kind: 'library', name: file.path, files: [file], bytes: file.size }));
  const packageUnits: Unit[] = [...packages.entries()].map(([name, files]) => ({
    kind: 'package',
    name,
    files,
    bytes: totalBytes(files),
  }));
  const byBytes = (a: Unit, b: Unit) => b.bytes - a.bytes || (a.name < b.name ? -1 : 1);
  const candidates = [...libraryUnits.sort(byBytes), ...packageUnits.sort(byBytes)];
  const compressed = new Set<string>();
  const movedPackages = new Set<string>();
  let uncompressedBytes = total;
  let compressedBytes = 0;
  for (const unit of candidates) {
    if (uncompressedBytes + compressedBytes * ratio <= budget) break;
    const fresh = unit.files.filter((file) => !compressed.has(file.path));
    if (fresh.length === 0) continue;
    for (const file of fresh) compressed.add(file.path);
    const bytes = totalBytes(fresh);
    uncompressedBytes -= bytes;
    compressedBytes += bytes;
    if (unit.kind === 'package') movedPackages.add(unit.name);
  }
  if (uncompressedBytes + compressedBytes * ratio > budget) {
    throw tooLarge(options.files, reservedForFunction, Math.round(total * ratio), limit);
  }
  const libraries = [...compressed].filter((file) => !movedPackages.has(topLevel(file)));
  return {
    uncompressed: options.files.filter((file) => !compressed.has(file.path)),
    compressed: options.files.filter((file) => compressed.has(file.path)),
    libraries,
    reservedForFunction,
    estimatedArchiveBytes: Math.round(compressedBytes * ratio),
    compressionRatio: ratio,
  };
}

/** The breakdown a user needs when nothing fits: what is big, and what is left to try. */
export function tooLarge(files: FileEntry[], functionBytes: number, compressedEstimate: number, limit = UNZIPPED_LIMIT): TorchError {
  const packages = new Map<string, number>();
  for (const file of files) packages.set(topLevel(file.path), (packages.get(topLevel(file.path)) ?? 0) + file.size);
  const largestPackages = [...packages.entries()].sort((a, b) => b[1] - a[1]).slice(0, 5);
  const largestFiles = [...files].sort((a, b) => b.size - a.size).slice(0, 5);
  return new TorchError(
    'TORCH_PACKAGE_TOO_LARGE',
    `The function does not fit Lambda's ${formatBytes(limit)} (${limit} bytes) unzipped limit for code plus layers, ` +
      `even with every dependency compressed: room kept for the function ${formatBytes(functionBytes)}, dependencies ` +
      `${formatBytes(totalBytes(files))} (about ${formatBytes(compressedEstimate)} compressed).\n` +
      `Largest packages: ${largestPackages.map(([name, bytes]) => `${name} ${formatBytes(bytes)}`).join(', ')}.\n` +
      `Largest files: ${largestFiles.map((file) => `${file.path} ${formatBytes(file.size)}`).join(', ')}.\n` +
      'Options left: drop requirements the function does not import, add strip.remove patterns for parts of ' +
      'packages you do not use, shrink the model (quantize it), or deploy as a container image (up to 10 GB).',
  );
}
