import { TorchError } from '../util/errors';

export type Architecture = 'x86_64' | 'arm64';

/** What one Lambda (runtime, architecture) pair accepts, in the words wheels use. */
export interface TargetPlatform {
  runtime: string;
  architecture: Architecture;
  /** "3.12" */
  pythonVersion: string;
  /** "cp312" */
  abi: string;
  /** Amazon Linux release the runtime runs on. */
  os: 'Amazon Linux 2' | 'Amazon Linux 2023';
  /** [major, minor] of the runtime's glibc. */
  glibc: [number, number];
  /** "x86_64" or "aarch64": the machine name wheels and ELF files use. */
  machine: 'x86_64' | 'aarch64';
  /** Every platform tag that runs there, newest first. */
  platformTags: string[];
}

// Lambda's python3.9–3.11 runtimes run on Amazon Linux 2 (glibc 2.26), python3.12+ on Amazon
// Linux 2023 (glibc 2.34): the newest manylinux tag a wheel may carry follows from that.
const RUNTIMES: Record<string, { os: TargetPlatform['os']; glibc: [number, number] }> = {
  'python3.9': { os: 'Amazon Linux 2', glibc: [2, 26] },
  'python3.10': { os: 'Amazon Linux 2', glibc: [2, 26] },
  'python3.11': { os: 'Amazon Linux 2', glibc: [2, 26] },
  'python3.12': { os: 'Amazon Linux 2023', glibc: [2, 34] },
  'python3.13': { os: 'Amazon Linux 2023', glibc: [2, 34] },
  'python3.14': { os: 'Amazon Linux 2023', glibc: [2, 34] },
};

export const SUPPORTED_RUNTIMES = Object.keys(RUNTIMES);

export function isPythonRuntime(runtime: string | undefined): boolean {
  return typeof runtime === 'string' && runtime.startsWith('python');
}

// pip (23.2, measured) matches --platform tags exactly: manylinux_2_26 does not accept a
// manylinux_2_17 wheel. So every tag the runtime's glibc can run is
// listed, newest first, with the legacy aliases. `linux_<machine>` is included because the
// PyTorch CPU index tags torch 2.0–2.6 x86_64 wheels that way.
export function platformTags(machine: 'x86_64' | 'aarch64', glibc: [number, number]): string[] {
  const oldest = machine === 'x86_64' ? 5 : 17;
  const tags: string[] = [];
  for (let minor = glibc[1]; minor >= oldest; minor--) {
    tags.push(`manylinux_${glibc[0]}_${minor}_${machine}`);
    if (minor === 17) tags.push(`manylinux2014_${machine}`);
    if (minor === 12) tags.push(`manylinux2010_${machine}`);
    if (minor === 5) tags.push(`manylinux1_${machine}`);
  }
  tags.push(`linux_${machine}`);
  return tags;
}

export function targetPlatform(runtime: string, architecture: string): TargetPlatform {
  const known = RUNTIMES[runtime];
  if (!known) {
    throw new TorchError(
      'TORCH_UNSUPPORTED_RUNTIME',
      `Runtime "${runtime}" is not one serverless-torch can package: PyTorch functions need a ` +
        `Python runtime from ${SUPPORTED_RUNTIMES.join(', ')}. Set provider.runtime (or the ` +
        `function's runtime) to one of them, or set "torch: false" on functions that do not use torch.`,
    );
  }
  if (architecture !== 'x86_64' && architecture !== 'arm64') {
    throw new TorchError(
      'TORCH_UNSUPPORTED_ARCHITECTURE',
      `Architecture "${architecture}" is not a Lambda architecture. Use x86_64 or arm64.`,
    );
  }
  const pythonVersion = runtime.slice('python'.length);
  const machine = architecture === 'arm64' ? 'aarch64' : 'x86_64';
  return {
    runtime,
    architecture,
    pythonVersion,
    abi: `cp${pythonVersion.replace('.', '')}`,
    os: known.os,
    glibc: known.glibc,
    machine,
    platformTags: platformTags(machine, known.glibc),
  };
}

/** Which runtimes of the given architecture have a glibc at least `needed`. */
export function runtimesWithGlibc(needed: [number, number]): string[] {
  return SUPPORTED_RUNTIMES.filter((runtime) => {
    const { glibc } = RUNTIMES[runtime];
    return glibc[0] > needed[0] || (glibc[0] === needed[0] && glibc[1] >= needed[1]);
  });
}

export function targetId(target: Pick<TargetPlatform, 'runtime' | 'architecture'>): string {
  return `${target.runtime}-${target.architecture}`;
}
