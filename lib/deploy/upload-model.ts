import * as fsp from 'node:fs/promises';
import { forEachLimit } from '../util/concurrency';
import { TorchError } from '../util/errors';

/**
 * The shape of the framework's `provider.request` for S3 (serverless@3: AWS SDK v2 method names
 * and params). Anything that answers like it will do, e.g. an SDK v3 client wrapped alike.
 */
export type S3Request = (service: 'S3', method: string, params: Record<string, unknown>) => Promise<any>;

/** S3 accepts no multipart part below 5 MiB (but the last) and no more than 10,000 parts. */
export const MIN_PART_BYTES = 5 * 1024 * 1024;
export const MAX_PARTS = 10_000;

export interface UploadModelOptions {
  /** The framework's `provider.request`, or anything of its shape. */
  request: S3Request;
  /** The deployment bucket. */
  bucket: string;
  /** serverless-torch/models/<sha256>/<file name>: the content decides the key, so equal size means equal object. */
  key: string;
  /** The model file on this machine. */
  file: string;
  /** Its size in bytes, as packaged; the file must still have it. */
  size: number;
  /** Size of each uploaded part, raised to S3's minimum and to what 10,000 parts need. Files up to this size go in one putObject. @default 16 MiB */
  partBytes?: number;
  /** Parts in flight at once (each held in memory while it travels). @default 4 */
  concurrency?: number;
  /** More putObject / createMultipartUpload params, e.g. the deployment bucket's ServerSideEncryption and SSEKMSKeyId. @default {} */
  objectParams?: Record<string, unknown>;
  /** Called with the bytes uploaded so far and the total, after each part. */
  onProgress?: (uploadedBytes: number, totalBytes: number) => void;
}

export interface UploadModelResult {
  /** False when an object with this key and size was already there. */
  uploaded: boolean;
  /** 0 when skipped, 1 for a single putObject, else the multipart upload's part count. */
  parts: number;
}

export const DEFAULT_PART_BYTES = 16 * 1024 * 1024;
export const DEFAULT_CONCURRENCY = 4;

/** Puts the model into the bucket unless an object with its key and size is already there. */
export async function uploadModel(options: UploadModelOptions): Promise<UploadModelResult> {
  const { request, bucket, key, file, size } = options;
  const st = await fsp.stat(file);
  if (st.size !== size) {
    throw new TorchError(
      'TORCH_MODEL_CHANGED',
      `model file ${file} is ${st.size} bytes, the package recorded ${size}: it changed after packaging; package again before deploying`,
    );
  }
  if ((await existingSize(request, bucket, key)) === size) return { uploaded: false, parts: 0 };
  const partBytes = effectivePartBytes(size, options.partBytes ?? DEFAULT_PART_BYTES);
  const objectParams = { ContentType: 'application/octet-stream', ...(options.objectParams ?? {}) };
  const report = options.onProgress ?? (() => undefined);
  if (size <= partBytes) {
    const body = await fsp.readFile(file);
    await call(request, 'putObject', { Bucket: bucket, Key: key, Body: body, ContentLength: size, ...objectParams }, bucket, key);
    report(size, size);
    return { uploaded: true, parts: 1 };
  }
  const parts = await multipartUpload({ ...options, partBytes, objectParams, onProgress: report });
  return { uploaded: true, parts };
}

/** The part size to use: the one asked for, but at least S3's minimum and what 10,000 parts need. */
export function effectivePartBytes(size: number, partBytes: number): number {
  return Math.max(partBytes, MIN_PART_BYTES, Math.ceil(size / MAX_PARTS));
}

/** The size of the object at `key`, or undefined when there is none. */
/** The size of the object at the key, or undefined when there is none. */
export async function existingSize(request: S3Request, bucket: string, key: string): Promise<number | undefined> {
  try {
    const head = await request('S3', 'headObject', { Bucket: bucket, Key: key });
    return Number(head.ContentLength);
  } catch (error) {
    if (awsStatus(error) === 404 || ['NotFound', 'NoSuchKey'].includes(awsCode(error) ?? '')) return undefined;
    throw uploadFailed('headObject', bucket, key, error);
  }
}

type Multipart = UploadModelOptions & { partBytes: number; objectParams: Record<string, unknown>; onProgress: (uploaded: number, total: number) => void };

/** createMultipartUpload, the parts read from the file one at a time, complete; abort on failure. */
async function multipartUpload(options: Multipart): Promise<number> {
  const { request, bucket, key, file, size, partBytes } = options;
  const created = await call(request, 'createMultipartUpload', { Bucket: bucket, Key: key, ...options.objectParams }, bucket, key);
  const uploadId = String(created.UploadId);
  const count = Math.ceil(size / partBytes);
  const etags: string[] = new Array(count);
  let uploaded = 0;
  const handle = await fsp.open(file, 'r');
  try {
    const numbers = Array.from({ length: count }, (_, i) => i + 1);
    await forEachLimit(numbers, options.concurrency ?? DEFAULT_CONCURRENCY, async (partNumber) => {
      const offset = (partNumber - 1) * partBytes;
      const length = Math.min(partBytes, size - offset);
      // One part in memory per stream: a Buffer the SDK can send again when it retries.
      const body = Buffer.allocUnsafe(length);
      const { bytesRead } = await handle.read(body, 0, length, offset);
      if (bytesRead !== length) throw new Error(`${file} ended at byte ${offset + bytesRead}, before ${offset + length}`);
      const part = await call(request, 'uploadPart', { Bucket: bucket, Key: key, UploadId: uploadId, PartNumber: partNumber, Body: body, ContentLength: length }, bucket, key);
      etags[partNumber - 1] = String(part.ETag);
      uploaded += length;
      options.onProgress(uploaded, size);
    });
    const Parts = etags.map((ETag, i) => ({ ETag, PartNumber: i + 1 }));
    await call(request, 'completeMultipartUpload', { Bucket: bucket, Key: key, UploadId: uploadId, MultipartUpload: { Parts } }, bucket, key);
  } catch (error) {
    // Parts of an upload neither completed nor aborted are kept (and billed) by S3.
    await request('S3', 'abortMultipartUpload', { Bucket: bucket, Key: key, UploadId: uploadId }).catch(() => undefined);
    throw error instanceof TorchError ? error : uploadFailed('uploadPart', bucket, key, error);
  } finally {
    await handle.close();
  }
  return count;
}

async function call(request: S3Request, method: string, params: Record<string, unknown>, bucket: string, key: string): Promise<any> {
  try {
    return await request('S3', method, params);
  } catch (error) {
    throw uploadFailed(method, bucket, key, error);
  }
}

function uploadFailed(method: string, bucket: string, key: string, error: unknown): TorchError {
  const status = awsStatus(error);
  const code = awsCode(error);
  const said = [status, code].filter((x) => x !== undefined).join(' ');
  const fix =
    status === 403
      ? 'the deploying credentials need s3:GetObject, s3:PutObject and s3:AbortMultipartUpload on the deployment bucket'
      : 'deploy again (an unchanged model is not uploaded twice)';
  return new TorchError(
    'TORCH_MODEL_UPLOAD_FAILED',
    `uploading the model to s3://${bucket}/${key} failed at ${method}${said ? ` (${said})` : ''}: ${(error as Error)?.message ?? error}; ${fix}`,
    { cause: error },
  );
}

/** The HTTP status of an error from provider.request (SDK v2: providerError.statusCode; v3: $metadata). */
export function awsStatus(error: unknown): number | undefined {
  const e = error as any;
  const status = e?.providerError?.statusCode ?? e?.providerError?.$metadata?.httpStatusCode ?? e?.statusCode ?? e?.$metadata?.httpStatusCode;
  return typeof status === 'number' ? status : undefined;
}

/** The AWS error code of an error from provider.request (SDK v2: code; v3: name). */
export function awsCode(error: unknown): string | undefined {
  const e = error as any;
  const code = e?.providerError?.code ?? e?.providerError?.name ?? e?.code ?? e?.name;
  return typeof code === 'string' ? code : undefined;
}
