import assert from 'node:assert/strict';
import * as crypto from 'node:crypto';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { S3Request, uploadModel } from '../../../lib/deploy/upload-model';
import { S3Server, S3RVER_ACCESS_KEY_ID, S3RVER_REGION, S3RVER_SECRET_ACCESS_KEY, startS3Server } from '../../support/s3-server';
import { REPO } from '../../support/sls';

const MiB = 1024 * 1024;

/**
 * serverless@3's own request function (what provider.request calls, with its queue, retries and
 * error wrapping) and its AWS SDK v2, pointed at the local server.
 */
function frameworkRequest(server: S3Server, calls: string[]): S3Request {
  // eslint-disable-next-line @typescript-eslint/no-require-imports
  const awsRequest = require(path.join(REPO, 'node_modules', 'serverless', 'lib', 'aws', 'request.js'));
  const service = {
    name: 'S3',
    params: {
      endpoint: server.endpoint,
      s3ForcePathStyle: true,
      region: S3RVER_REGION,
      credentials: { accessKeyId: S3RVER_ACCESS_KEY_ID, secretAccessKey: S3RVER_SECRET_ACCESS_KEY },
    },
  };
  return (name, method, params) => {
    calls.push(method);
    return awsRequest({ ...service, name }, method, params);
  };
}

describe('uploadModel against s3rver through serverless@3\'s request and AWS SDK v2', () => {
  let server: S3Server;
  let dir: string;
  before(async () => {
    server = await startS3Server({ bucket: 'deployment-bucket' });
    dir = fs.mkdtempSync(path.join(os.tmpdir(), 'torch-upload-'));
  });
  after(async () => {
    await server.close();
    fs.rmSync(dir, { recursive: true, force: true });
  });

  async function storedSha256(request: S3Request, key: string): Promise<string> {
    const object = await request('S3', 'getObject', { Bucket: 'deployment-bucket', Key: key });
    return crypto.createHash('sha256').update(object.Body).digest('hex');
  }

  it('uploads a 40 MiB model in parts, then makes no upload when deployed again', async () => {
    const data = crypto.randomBytes(40 * MiB + 17);
    const sha256 = crypto.createHash('sha256').update(data).digest('hex');
    const file = path.join(dir, 'model.pt');
    fs.writeFileSync(file, data);
    const key = `serverless-torch/models/${sha256}/model.pt`;
    const options = { bucket: 'deployment-bucket', key, file, size: data.length, partBytes: 8 * MiB };

    const first: string[] = [];
    const progress: number[] = [];
    const uploaded = await uploadModel({ ...options, request: frameworkRequest(server, first), onProgress: (bytes) => progress.push(bytes) });
    assert.deepEqual(uploaded, { uploaded: true, parts: 6 });
    assert.deepEqual(first, ['headObject', 'createMultipartUpload', ...Array(6).fill('uploadPart'), 'completeMultipartUpload']);
    assert.equal(progress.length, 6);
    assert.equal(progress[5], data.length);
    assert.equal(await storedSha256(frameworkRequest(server, []), key), sha256);

    const again: string[] = [];
    assert.deepEqual(await uploadModel({ ...options, request: frameworkRequest(server, again) }), { uploaded: false, parts: 0 });
    assert.deepEqual(again, ['headObject']);
  });

  it('puts a small model in one request', async () => {
    const data = crypto.randomBytes(MiB);
    const file = path.join(dir, 'small.pt');
    fs.writeFileSync(file, data);
    const calls: string[] = [];
    const key = 'serverless-torch/models/small/small.pt';
    const result = await uploadModel({ request: frameworkRequest(server, calls), bucket: 'deployment-bucket', key, file, size: data.length });
    assert.deepEqual(result, { uploaded: true, parts: 1 });
    assert.deepEqual(calls, ['headObject', 'putObject']);
    assert.equal(await storedSha256(frameworkRequest(server, []), key), crypto.createHash('sha256').update(data).digest('hex'));
  });
});
