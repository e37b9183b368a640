import { TorchError } from '../util/errors';
import { formatBytes } from '../util/format';
import { DEFAULT_TMP_MB } from './limits';
import { TargetPlatform } from '../resolve/target';
import { Codec } from './deps-archive';

/** Lambda's limit on the init phase of an on-demand function; past it Lambda retries init inside the first request. */
export const INIT_LIMIT_SECONDS = 10;
/** Memory that buys one full vCPU (Lambda: 1,769 MB; 6 vCPUs from 8,846 MB); below it a function gets that fraction of one. */
export const MB_PER_VCPU = 1769;

// Per-vCPU figures measured with bench/cold-start (torch 2.13 x86_64, python3.11, warm page
// cache, README "Performance"), rounded towards slow: the estimate is for a warning, and a
// loaded Lambda host is slower than an idle one.
/**
 * Unpacking the compressed dependencies into /tmp (decoding and writing), per vCPU: the shim
 * decodes frames on one thread per vCPU.
 */
export const UNPACK_BYTES_PER_SECOND: Record<Codec, number> = { zstd: 600e6, zlib: 200e6 };
/** `import torch` on one vCPU, with bytecode compiled for the runtime and without (import is single-threaded). */
export const IMPORT_SECONDS = { bytecode: 1.4, source: 3.0 };
/** Reading and copying the model's weights, per vCPU. */
export const LOAD_BYTES_PER_SECOND = 500e6;
/**
 * A model in S3 (bench/s3-download): creating the S3 client takes 0.93 s (import botocore and the
 * client, measured here); the download itself costs 3.5 ms of CPU per MiB across its threads
 * (about 290 MiB/s per vCPU) and is bound by the network: on loopback here 6.1 ms per MiB
 * (about 170 MB/s). Lambda's network to S3 cannot be measured here; 90 MB/s is assumed, below
 * what loopback gives, since the estimate is for a warning.
 */
export const S3_CLIENT_SECONDS = 0.93;
export const S3_CPU_BYTES_PER_SECOND = 290 * 1024 * 1024;
export const S3_NETWORK_BYTES_PER_SECOND = 90e6;

export interface InitEstimate {
  vcpus: number;
  unpack: number;
  import: number;
  load: number;
  /** Fetching a model stored in S3, alongside unpack and import. */
  download: number;
  total: number;
}

/** Seconds a cold start takes from sandbox start to a loaded model, at a memory size. */
export function estimateInit(options: { memorySize: number; tmpBytes: number; codec: Codec | null; modelBytes: number; downloadBytes?: number; bytecode: boolean }): InitEstimate {
  const vcpus = Math.min(6, options.memorySize / MB_PER_VCPU);
  // Import and load run on one thread: more than one vCPU does not speed them up, less slows them down.
  const oneThread = Math.min(1, vcpus);
  const unpack = options.tmpBytes / (UNPACK_BYTES_PER_SECOND[options.codec ?? 'zstd'] * vcpus);
  const importSeconds = (options.bytecode ? IMPORT_SECONDS.bytecode : IMPORT_SECONDS.source) / oneThread;
  const load = options.modelBytes / (LOAD_BYTES_PER_SECOND * oneThread);
  const downloadBytes = options.downloadBytes ?? 0;
  const download = downloadBytes
    ? S3_CLIENT_SECONDS / oneThread + downloadBytes / Math.min(S3_NETWORK_BYTES_PER_SECOND, S3_CPU_BYTES_PER_SECOND * vcpus)
    : 0;
  // The shim downloads while it unpacks and imports torch: the longer of the two is on the path.
  return { vcpus, unpack, import: importSeconds, load, download, total: Math.max(download, unpack + importSeconds) + load };
}

/**
 * A warning when the estimated init likely passes Lambda's 10 s limit (Lambda then runs init
 * again inside the first request, with that request's timeout), or null.
 */
export function initBudgetWarning(options: {
  functionName: string;
  memorySize: number;
  tmpBytes: number;
  codec: Codec | null;
  modelBytes: number;
  downloadBytes?: number;
  bytecode: boolean;
}): string | null {
  const estimate = estimateInit(options);
  if (estimate.total < INIT_LIMIT_SECONDS) return null;
  let enough: number | null = null;
  for (let memory = Math.ceil(options.memorySize / 64) * 64; memory <= 10240; memory += 64) {
    if (estimateInit({ ...options, memorySize: memory }).total < INIT_LIMIT_SECONDS * 0.8) {
      enough = memory;
      break;
    }
  }
  return (
    `Function "${options.functionName}": its cold start is estimated at ${estimate.total.toFixed(1)} s at ${options.memorySize} MB ` +
    `(${estimate.vcpus.toFixed(2)} vCPU: unpack ${formatBytes(options.tmpBytes)}${options.codec ? ` (${options.codec})` : ''} ${estimate.unpack.toFixed(1)} s, import torch ` +
    `${estimate.import.toFixed(1)} s${options.bytecode ? '' : ' without bytecode'}, ${estimate.download ? `meanwhile the model's download from S3 ${estimate.download.toFixed(1)} s, ` : ''}model ${estimate.load.toFixed(1)} s), which likely passes ` +
    `Lambda's ${INIT_LIMIT_SECONDS} s init limit; Lambda then repeats init inside the first request. ` +
    (enough
      ? `Set memorySize to ${enough} MB or more (memory buys vCPUs), or enable SnapStart (python3.12+).`
      : 'No memory size brings it under the limit: enable SnapStart (python3.12+, when the unpacked dependencies and the model fit ' +
        'its 512 MB of /tmp), or ship a smaller model (quantize: dynamic).')
  );
}

/**
 * Resident memory of a warm sandbox with torch imported and a tiny model after its first
 * prediction: 282–287 MiB measured for the example (torch 2.13.0, python3.11, 1,000 invocations,
 * test/e2e/load.test.ts), rounded up. The model's weights come on top of it.
 */
export const TORCH_RESIDENT_BYTES = 290 * 1024 * 1024;
// Room above the estimate: allocator overhead and the handler's own tensors.
const MEMORY_HEADROOM = 1.1;

/**
 * A warning when the function's memory is below what torch plus its model keep resident (Lambda
 * stops a function that passes its memory size, in the middle of a request), or null.
 */
export function memoryWarning(options: { functionName: string; memorySize: number; modelBytes: number }): string | null {
  const needed = Math.ceil(((TORCH_RESIDENT_BYTES + options.modelBytes) * MEMORY_HEADROOM) / (1024 * 1024));
  if (options.memorySize >= needed) return null;
  return (
    `Function "${options.functionName}": memorySize ${options.memorySize} MB is below what torch and the model keep resident, ` +
    `about ${needed} MB (torch with the interpreter ${formatBytes(TORCH_RESIDENT_BYTES)}, measured after a first prediction, ` +
    `plus the model's ${formatBytes(options.modelBytes)}, plus 10%). Lambda stops a function that passes its memory mid-request ` +
    `("Runtime exited with error: signal: killed"). Set memorySize to ${Math.ceil(needed / 64) * 64} MB or more.`
  );
}

/**
 * SnapStart (python3.12+) snapshots memory and /tmp, and refuses ephemeral storage above 512 MB:
 * the unpacked dependencies must fit the default /tmp.
 */
export function checkSnapStart(options: { functionName: string; target: TargetPlatform; tmpMbNeeded: number; ephemeralStorageSize: number | null; tmpBytes: number }): void {
  const { functionName, target } = options;
  const [major, minor] = target.pythonVersion.split('.').map(Number);
  if (major === 3 && minor < 12) {
    throw new TorchError(
      'TORCH_SNAPSTART_RUNTIME',
      `functions.${functionName}.snapStart is true, but its runtime is ${target.runtime}: Lambda offers SnapStart for Python ` +
        'from python3.12 on. Use runtime python3.12 or later, or remove snapStart.',
    );
  }
  if (options.tmpMbNeeded > DEFAULT_TMP_MB || (options.ephemeralStorageSize ?? DEFAULT_TMP_MB) > DEFAULT_TMP_MB) {
    throw new TorchError(
      'TORCH_SNAPSTART_TMP_TOO_LARGE',
      `functions.${functionName}.snapStart is true, but the function needs ${Math.max(options.tmpMbNeeded, options.ephemeralStorageSize ?? 0)} MB of /tmp ` +
        `(the compressed dependencies unpack to ${formatBytes(options.tmpBytes)} there) and SnapStart allows at most ${DEFAULT_TMP_MB} MB ` +
        '(ephemeralStorageSize). Make the dependencies smaller (drop requirements, custom.torch.strip.remove), or remove snapStart.',
    );
  }
}
