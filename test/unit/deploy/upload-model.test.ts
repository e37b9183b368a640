import assert from 'node:assert/strict';
import * as crypto from 'node:crypto';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { MAX_PARTS, MIN_PART_BYTES, S3Request, effectivePartBytes, uploadModel } from '../../../lib/deploy/upload-model';
import { TorchError } from '../../../lib/util/errors';

const MiB = 1024 * 1024;

interface Call {
  method: string;
  params: any;
}

/** Plays S3 for uploadModel: records each call, answers from `answers` (or a default), tracks parts in flight. */
function recordingS3(answers: { [method: string]: (params: any) => any } = {}) {
  const calls: Call[] = [];
  let inFlight = 0;
  let maxInFlight = 0;
  const request: S3Request = async (service, method, params) => {
    assert.equal(service, 'S3');
    calls.push({ method, params });
    if (method === 'uploadPart') {
      maxInFlight = Math.max(maxInFlight, ++inFlight);
      await new Promise((resolve) => setTimeout(resolve, 5));
      inFlight--;
    }
    const answer = answers[method];
    if (answer) return answer(params);
    switch (method) {
      case 'headObject':
        throw notFoundV2();
      case 'createMultipartUpload':
        return { UploadId: 'upload-1' };
      case 'uploadPart':
        return { ETag: `"etag-${params.PartNumber}"` };
      default:
        return {};
    }
  };
  return { request, calls, methods: () => calls.map((c) => c.method), maxInFlight: () => maxInFlight };
}

/** What serverless@3's provider.request throws for a missing object (ServerlessError + SDK v2 error). */
function notFoundV2(): Error {
  return Object.assign(new Error('Not Found'), { code: 'AWS_S3_HEAD_OBJECT_NOT_FOUND', providerError: { code: 'NotFound', statusCode: 404 } });
}

describe('uploadModel', () => {
  let dir: string;
  beforeEach(() => (dir = fs.mkdtempSync(path.join(os.tmpdir(), 'torch-upload-'))));
  afterEach(() => fs.rmSync(dir, { recursive: true, force: true }));

  function modelFile(bytes: number): { file: string; data: Buffer } {
    const data = crypto.randomBytes(bytes);
    const file = path.join(dir, 'model.pt');
    fs.writeFileSync(file, data);
    return { file, data };
  }

  const target = { bucket: 'deploy-bucket', key: 'serverless-torch/models/abc/model.pt' };

  it('uploads nothing when an object with the key and size is there', async () => {
    const { file } = modelFile(1000);
    const s3 = recordingS3({ headObject: () => ({ ContentLength: 1000 }) });
    assert.deepEqual(await uploadModel({ request: s3.request, ...target, file, size: 1000 }), { uploaded: false, parts: 0 });
    assert.deepEqual(s3.calls, [{ method: 'headObject', params: { Bucket: 'deploy-bucket', Key: target.key } }]);
  });

  it('puts a file no larger than a part in one putObject, with the extra object params', async () => {
    const { file, data } = modelFile(3 * MiB);
    const s3 = recordingS3();
    const progress: number[] = [];
    const result = await uploadModel({
      request: s3.request, ...target, file, size: data.length,
      objectParams: { ServerSideEncryption: 'aws:kms', SSEKMSKeyId: 'key-1' },
      onProgress: (bytes, total) => progress.push(bytes / total),
    });
    assert.deepEqual(result, { uploaded: true, parts: 1 });
    assert.deepEqual(s3.methods(), ['headObject', 'putObject']);
    const put = s3.calls[1].params;
    assert.ok(put.Body.equals(data));
    assert.equal(put.ContentLength, data.length);
    assert.equal(put.ServerSideEncryption, 'aws:kms');
    assert.equal(put.SSEKMSKeyId, 'key-1');
    assert.deepEqual(progress, [1]);
  });

  it('replaces an object of another size (the key names the content, so it is not ours)', async () => {
    const { file } = modelFile(100);
    const s3 = recordingS3({ headObject: () => ({ ContentLength: 99 }) });
    assert.equal((await uploadModel({ request: s3.request, ...target, file, size: 100 })).uploaded, true);
    assert.deepEqual(s3.methods(), ['headObject', 'putObject']);
  });

  it('sends a larger file in parts read from the file, a few at a time, and completes them in order', async () => {
    const { file, data } = modelFile(23 * MiB + 3);
    const s3 = recordingS3();
    const progress: number[] = [];
    const result = await uploadModel({ request: s3.request, ...target, file, size: data.length, partBytes: 5 * MiB, concurrency: 2, onProgress: (bytes) => progress.push(bytes) });
    assert.deepEqual(result, { uploaded: true, parts: 5 });
    assert.deepEqual(s3.methods(), ['headObject', 'createMultipartUpload', 'uploadPart', 'uploadPart', 'uploadPart', 'uploadPart', 'uploadPart', 'completeMultipartUpload']);
    const parts = s3.calls.filter((c) => c.method === 'uploadPart').map((c) => c.params).sort((a, b) => a.PartNumber - b.PartNumber);
    assert.ok(parts.every((p) => p.UploadId === 'upload-1' && p.Body.length === p.ContentLength && p.Body.length <= 5 * MiB));
    assert.ok(Buffer.concat(parts.map((p) => p.Body)).equals(data));
    assert.equal(s3.maxInFlight(), 2);
    const complete = s3.calls[s3.calls.length - 1].params;
    assert.deepEqual(complete.MultipartUpload.Parts, [1, 2, 3, 4, 5].map((n) => ({ ETag: `"etag-${n}"`, PartNumber: n })));
    assert.equal(complete.UploadId, 'upload-1');
    assert.deepEqual(progress, [...progress].sort((a, b) => a - b));
    assert.equal(progress[progress.length - 1], data.length);
  });

  it('keeps parts within what S3 accepts: at least 5 MiB and at most 10,000 of them', () => {
    assert.equal(effectivePartBytes(100 * MiB, MiB), MIN_PART_BYTES);
    const huge = 200 * 1024 * MiB;
    assert.equal(effectivePartBytes(huge, 16 * MiB), Math.ceil(huge / MAX_PARTS));
    assert.ok(Math.ceil(huge / effectivePartBytes(huge, 16 * MiB)) <= MAX_PARTS);
    assert.equal(effectivePartBytes(100 * MiB, 16 * MiB), 16 * MiB);
  });

  it('aborts the multipart upload when a part fails, and says which call failed', async () => {
    const { file, data } = modelFile(12 * MiB);
    const refused = Object.assign(new Error('Slow Down'), { providerError: { code: 'SlowDown', statusCode: 503 } });
    const s3 = recordingS3({
      uploadPart: (params) => {
        if (params.PartNumber === 2) throw refused;
        return { ETag: '"e"' };
      },
      abortMultipartUpload: () => {
        throw new Error('abort failed too');
      },
    });
    await assert.rejects(uploadModel({ request: s3.request, ...target, file, size: data.length, partBytes: 5 * MiB, concurrency: 1 }), (error: TorchError) => {
      assert.equal(error.code, 'TORCH_MODEL_UPLOAD_FAILED');
      assert.match(error.message, /s3:\/\/deploy-bucket\/serverless-torch\/models\/abc\/model\.pt failed at uploadPart \(503 SlowDown\): Slow Down/);
      assert.equal(error.cause, refused);
      return true;
    });
    assert.deepEqual(s3.methods(), ['headObject', 'createMultipartUpload', 'uploadPart', 'uploadPart', 'abortMultipartUpload']);
    assert.deepEqual(s3.calls[4].params, { Bucket: 'deploy-bucket', Key: target.key, UploadId: 'upload-1' });
  });

  it('names the permissions when S3 refuses the deploying credentials', async () => {
    const { file } = modelFile(10);
    const s3 = recordingS3({ headObject: () => { throw Object.assign(new Error('Forbidden'), { providerError: { code: 'Forbidden', statusCode: 403 } }); } });
    await assert.rejects(uploadModel({ request: s3.request, ...target, file, size: 10 }), (error: TorchError) => {
      assert.equal(error.code, 'TORCH_MODEL_UPLOAD_FAILED');
      assert.match(error.message, /failed at headObject \(403 Forbidden\).*need s3:GetObject, s3:PutObject/);
      return true;
    });
  });

  it('treats an SDK v3 style NotFound as no object', async () => {
    const { file } = modelFile(10);
    const v3NotFound = Object.assign(new Error('NotFound'), { name: 'NotFound', $metadata: { httpStatusCode: 404 } });
    const s3 = recordingS3({ headObject: () => { throw v3NotFound; } });
    assert.equal((await uploadModel({ request: s3.request, ...target, file, size: 10 })).uploaded, true);
  });

  it('refuses a file that no longer has the packaged size, before asking S3 anything', async () => {
    const { file } = modelFile(10);
    const s3 = recordingS3();
    await assert.rejects(uploadModel({ request: s3.request, ...target, file, size: 11 }), (error: TorchError) => {
      assert.equal(error.code, 'TORCH_MODEL_CHANGED');
      assert.match(error.message, /is 10 bytes, the package recorded 11/);
      return true;
    });
    assert.deepEqual(s3.calls, []);
  });
});
