import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { bucketReference, deploymentBucketName, modelReadStatement, usesOwnRole } from '../../../lib/deploy/model-access';
import { S3Request } from '../../../lib/deploy/upload-model';
import { storedObjects, uploadStoredModels } from '../../../lib/deploy/upload-models';
import { MODELS_INDEX } from '../../../lib/pipeline/store-models';
import { silentReporter } from '../../../lib/util/reporter';

describe('what a function reading its model from S3 needs', () => {
  it('reads the bucket from provider.deploymentBucket as a name or { name }, else refers to the framework\'s', () => {
    assert.equal(deploymentBucketName('my-bucket'), 'my-bucket');
    assert.equal(deploymentBucketName({ name: 'my-bucket', serverSideEncryption: 'AES256' }), 'my-bucket');
    assert.equal(deploymentBucketName({ serverSideEncryption: 'AES256' }), null);
    assert.equal(deploymentBucketName(undefined), null);
    assert.deepEqual(bucketReference(undefined), { Ref: 'ServerlessDeploymentBucket' });
    assert.equal(bucketReference({ name: 'my-bucket' }), 'my-bucket');
  });

  it('grants s3:GetObject on the model\'s key only, in any partition', () => {
    const key = 'serverless-torch/models/abc/model.pt';
    assert.deepEqual(modelReadStatement('my-bucket', key), {
      Effect: 'Allow',
      Action: ['s3:GetObject'],
      Resource: [{ 'Fn::Join': ['', ['arn:', { Ref: 'AWS::Partition' }, ':s3:::', 'my-bucket', `/${key}`]] }],
    });
  });

  it('tells a generated role (statements can be added) from a role the user gives', () => {
    assert.equal(usesOwnRole({}, {}), false);
    assert.equal(usesOwnRole({ iam: { role: { statements: [] } } }, {}), false, 'provider.iam.role as an object is the generated role');
    assert.equal(usesOwnRole({ iam: { role: 'arn:aws:iam::123456789012:role/mine' } }, {}), true);
    assert.equal(usesOwnRole({ role: 'mine' }, {}), true);
    assert.equal(usesOwnRole({}, { role: 'mine' }), true);
  });
});

describe('uploadStoredModels', () => {
  let dir: string;
  beforeEach(() => (dir = fs.mkdtempSync(path.join(os.tmpdir(), 'torch-stored-'))));
  afterEach(() => fs.rmSync(dir, { recursive: true, force: true }));

  it('has nothing to upload for a package that stored no model', async () => {
    assert.deepEqual(storedObjects(dir), []);
    const request: S3Request = async () => assert.fail('no request without a stored model');
    assert.deepEqual(await uploadStoredModels({ packageDir: dir, request, bucket: 'b', reporter: silentReporter }), { uploaded: [], present: [] });
  });

  it('uploads each stored model the bucket lacks and leaves the ones it has', async () => {
    const objects = ['a', 'b'].map((name) => {
      const file = `serverless-torch-models/${name}/${name}.pt`;
      fs.mkdirSync(path.join(dir, path.dirname(file)), { recursive: true });
      fs.writeFileSync(path.join(dir, file), name.repeat(10));
      return { key: `serverless-torch/models/${name}/${name}.pt`, file, size: 10, sha256: name };
    });
    fs.writeFileSync(path.join(dir, MODELS_INDEX), JSON.stringify(objects));
    const puts: string[] = [];
    const request: S3Request = async (_service, method, params: any) => {
      if (method === 'headObject') {
        if (params.Key === objects[0].key) return { ContentLength: 10 };
        throw Object.assign(new Error('Not Found'), { providerError: { code: 'NotFound', statusCode: 404 } });
      }
      if (method === 'putObject') puts.push(`${params.Bucket}/${params.Key}`);
      return {};
    };
    const result = await uploadStoredModels({ packageDir: dir, request, bucket: 'deploy-bucket', reporter: silentReporter });
    assert.deepEqual(result.present.map((object) => object.key), [objects[0].key]);
    assert.deepEqual(result.uploaded.map((object) => object.key), [objects[1].key]);
    assert.deepEqual(puts, [`deploy-bucket/${objects[1].key}`]);
  });
});
