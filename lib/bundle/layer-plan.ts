import { TorchError } from '../util/errors';
import { formatBytes } from '../util/format';
import { FileEntry, topLevel, totalBytes } from '../util/file-tree';
import { PackUnit, PackedUnit } from './deps-archive';
import { UNZIPPED_LIMIT } from './limits';

/** Which files ship as they are under /opt/python and which travel compressed to /tmp. */
export interface LayerPlan {
  uncompressed: FileEntry[];
  /** The units that travel compressed, measured, in archive order. */
  packed: PackedUnit[];
  /** Shared libraries moved out of a package that otherwise ships uncompressed (preloaded by the shim). */
  libraries: string[];
  /** Bytes the plan leaves for the function package (code and model). */
  reservedForFunction: number;
}

// Shared libraries loaded by soname (DT_NEEDED), which can live elsewhere once preloaded.
// Python extension modules are imported by path and must stay inside their package.
function isMovableLibrary(file: FileEntry): boolean {
  const name = file.path.split('/').pop() ?? '';
  return /^lib[^/]*\.so(\.\d+)*$/.test(name) && !/\.(cpython-|abi3|pypy)/.test(name);
}

/**
 * Room kept for the function package: rounded up to 16 MiB so that small code changes do not
 * change the plan (the layers then stay byte-identical and are not uploaded again), or to 1 MiB
 * when the coarse step would leave the dependencies too little room (a large model).
 */
export function reserveForFunction(functionBytes: number, step: 'coarse' | 'fine' = 'coarse'): number {
  const mib = 1024 * 1024;
  if (step === 'fine') return Math.ceil(functionBytes / mib) * mib;
  return Math.ceil((functionBytes + 8 * mib) / (16 * mib)) * (16 * mib);
}

/**
 * What may travel compressed, in the order it is compressed: whole shared libraries, largest
 * first, then whole top-level entries (less their libraries), largest first. So Python files stay
 * importable from /opt as long as possible and a cold start unpacks a few big files. Entries in
 * `pinned` (the zstd decoder, which must be importable before anything is unpacked) never move.
 */
export function packUnits(files: FileEntry[], pinned: string[]): { units: PackUnit[]; pinnedFiles: FileEntry[] } {
  const keep = new Set(pinned);
  const pinnedFiles = files.filter((file) => keep.has(topLevel(file.path)));
  const movable = files.filter((file) => !keep.has(topLevel(file.path)));
  const byBytes = (a: PackUnit, b: PackUnit) => b.bytes - a.bytes || (a.name < b.name ? -1 : 1);
  const libraries: PackUnit[] = movable
    .filter(isMovableLibrary)
    .map((file) => ({ kind: 'library' as const, name: file.path, files: [file], bytes: file.size }))
    .sort(byBytes);
  const libraryPaths = new Set(libraries.map((unit) => unit.name));
  const packages = new Map<string, FileEntry[]>();
  for (const file of movable) {
    if (libraryPaths.has(file.path)) continue;
    packages.set(topLevel(file.path), [...(packages.get(topLevel(file.path)) ?? []), file]);
  }
  const packageUnits: PackUnit[] = [...packages.entries()]
    .map(([name, unitFiles]) => ({ kind: 'package' as const, name, files: unitFiles, bytes: totalBytes(unitFiles) }))
    .sort(byBytes);
  return { units: [...libraries, ...packageUnits], pinnedFiles };
}

/**
 * The units to compress, in order, so that everything fits `budget`: the uncompressed files plus
 * the measured compressed units plus `overhead` (deps.json). Units are measured (compressed) only
 * as the plan reaches them, a batch at a time, each batch at least as large as what is still
 * missing (compressing saves less than a unit's size); it stops at the first unit that makes the
 * dependencies fit. Null when even all of them do not fit. Every library comes before every
 * package, so a package moves together with its libraries.
 */
export async function chooseUnits(options: {
  units: PackUnit[];
  /** Bytes that ship uncompressed whatever the plan (the decoder). */
  fixedBytes: number;
  budget: number;
  overhead: (packed: PackedUnit[]) => number;
  pack: (units: PackUnit[]) => Promise<PackedUnit[]>;
}): Promise<PackedUnit[] | null> {
  const { units, budget } = options;
  const chosen: PackedUnit[] = [];
  const unitBytes = (list: PackUnit[]) => list.reduce((sum, unit) => sum + unit.bytes, 0);
  let uncompressed = options.fixedBytes + unitBytes(units);
  let compressed = 0;
  const size = () => uncompressed + compressed + (chosen.length ? options.overhead(chosen) : 0);
  let next = 0;
  while (size() > budget) {
    if (next >= units.length) return null;
    const batch: PackUnit[] = [];
    const missing = size() - budget;
    while (next < units.length && (batch.length === 0 || unitBytes(batch) < missing)) batch.push(units[next++]);
    for (const packed of await options.pack(batch)) {
      chosen.push(packed);
      uncompressed -= packed.unit.bytes;
      compressed += packed.bytes;
      if (size() <= budget) break;
    }
  }
  return chosen;
}

/** Libraries moved to /tmp while the rest of their package stays in /opt: the shim preloads them. */
export function movedLibraries(packed: PackedUnit[]): string[] {
  const movedPackages = new Set(packed.filter((unit) => unit.unit.kind === 'package').map((unit) => unit.unit.name));
  return packed.filter((unit) => unit.unit.kind === 'library' && !movedPackages.has(topLevel(unit.unit.name))).map((unit) => unit.unit.name);
}

/** The plan once the units are chosen. */
export function layerPlan(files: FileEntry[], packed: PackedUnit[], reservedForFunction: number): LayerPlan {
  const moved = new Set(packed.flatMap((unit) => unit.unit.files.map((file) => file.path)));
  return {
    uncompressed: files.filter((file) => !moved.has(file.path)),
    packed,
    libraries: movedLibraries(packed),
    reservedForFunction,
  };
}

/** The breakdown a user needs when nothing fits: what is big, and what is left to try. */
export function tooLarge(options: { files: FileEntry[]; functionBytes: number; measured: string; limit?: number }): TorchError {
  const { files, functionBytes } = options;
  const limit = options.limit ?? UNZIPPED_LIMIT;
  const packages = new Map<string, number>();
  for (const file of files) packages.set(topLevel(file.path), (packages.get(topLevel(file.path)) ?? 0) + file.size);
  const largestPackages = [...packages.entries()].sort((a, b) => b[1] - a[1]).slice(0, 5);
  const largestFiles = [...files].sort((a, b) => b.size - a.size).slice(0, 5);
  return new TorchError(
    'TORCH_PACKAGE_TOO_LARGE',
    `The function does not fit Lambda's ${formatBytes(limit)} (${limit} bytes) unzipped limit for code plus layers, ` +
      `even with every dependency compressed: the function takes ${formatBytes(functionBytes)}, the dependencies ` +
      `${formatBytes(totalBytes(files))}, ${options.measured}.\n` +
      `Largest packages: ${largestPackages.map(([name, bytes]) => `${name} ${formatBytes(bytes)}`).join(', ')}.\n` +
      `Largest files: ${largestFiles.map((file) => `${file.path} ${formatBytes(file.size)}`).join(', ')}.\n` +
      'Options left: drop requirements the function does not import, add strip.remove patterns for parts of ' +
      'packages you do not use, shrink the model (quantize it), or deploy as a container image (up to 10 GB).',
  );
}
