import assert from 'node:assert/strict';
import { DeleteObjectCommand, S3Client } from '@aws-sdk/client-s3';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { runWithTorch } from '../support/host-torch';
import { S3Server, startS3Server } from '../support/s3-server';
import { CLIS, SlsResult, lastJson, makeService, runSls, serviceYaml, zipMembers } from '../support/sls';
import { WheelIndex, prepareFixtureWheels, prepareStoreWheels, startWheelIndex } from '../support/wheel-index';

const BUCKET = 'digits-deployment-bucket';

// 10,000 x 10,000 float32 weights: 400 MB of model, which no zip beside torch can hold.
const MAKE_MODEL = `import json, torch
torch.manual_seed(0)
model = torch.jit.script(torch.nn.Linear(10000, 10000).eval())
torch.jit.save(model, "model/big.pt")
with torch.no_grad():
    y = model(torch.ones(1, 10000) * 0.5)
json.dump({"sum": float(y.sum()), "head": y[0, :5].tolist()}, open("expected-big.json", "w"))
`;

const HANDLER = `import torch


def predict(event, context, model):
    with torch.no_grad():
        y = model(torch.ones(1, 10000) * event["scale"])
    return {"sum": float(y.sum()), "head": y[0, :5].tolist()}
`;

/** The requests for the model's object among what the CLI asked of AWS. */
function modelWrites(result: SlsResult): { method: string; key: string }[] {
  return result.awsRequests
    .filter((request) => request.service === 'S3' && /^(putObject|createMultipartUpload|uploadPart|completeMultipartUpload|upload)$/.test(request.method))
    .filter((request) => String(request.params.Key).startsWith('serverless-torch/models/'))
    .map((request) => ({ method: request.method, key: request.params.Key }));
}

describe('models bigger than the zip: stored in S3, uploaded at deploy, fetched at cold start (real CLI, s3rver)', function () {
  let index: WheelIndex;
  let s3: S3Server;
  let service: string;
  let expected: { sum: number; head: number[] };
  let key: string;

  const deployEnv = () => ({ SERVERLESS_TORCH_S3_ENDPOINT: s3.endpoint, SERVERLESS_TORCH_S3_BUCKET: BUCKET, ...s3.env });
  const fromS3Env = () => ({ ...s3.env, SERVERLESS_TORCH_MODEL_BUCKET: BUCKET });

  before(async () => {
    const wheels = await prepareFixtureWheels();
    const boto3 = await prepareStoreWheels('boto3-cp311-v1', ['boto3']);
    const byName = new Map([...wheels.dependencyWheels, ...boto3].map((wheel) => [path.basename(wheel), wheel]));
    index = await startWheelIndex({ torchWheels: [wheels.torchWheelRetagged], otherWheels: [...byName.values()] });
    s3 = await startS3Server({ bucket: BUCKET });
    service = makeService({
      files: {
        'big.py': HANDLER,
        'serverless.yml': serviceYaml({ torchIndexUrl: index.torchUrl, indexUrl: index.simpleUrl, model: 'model/big.pt', functions: '  predict:\n    handler: big.predict' }),
      },
    });
    await runWithTorch(MAKE_MODEL, service);
    expected = JSON.parse(fs.readFileSync(path.join(service, 'expected-big.json'), 'utf8'));
  });
  after(async () => {
    await index?.close();
    await s3?.close();
    if (service) fs.rmSync(service, { recursive: true, force: true });
  });

  it('packages a 400 MB model under store: auto by moving it to S3, with the permission and the /tmp it needs', async () => {
    const result = await runSls('serverless', ['package'], service);
    const output = result.stdout + result.stderr;
    assert.equal(result.code, 0, output);
    assert.match(output, /model\/big\.pt \(381\.\d MiB\) goes to S3 \(store: auto\)/);
    assert.match(output, /model model\/big\.pt \(torchscript; in S3, 381\.\d MiB fetched into \/tmp\)/);
    const objects = JSON.parse(fs.readFileSync(path.join(service, '.serverless', 'serverless-torch-models.json'), 'utf8'));
    assert.equal(objects.length, 1);
    key = objects[0].key;
    assert.match(key, /^serverless-torch\/models\/[0-9a-f]{64}\/big\.pt$/);
    assert.ok(!zipMembers(path.join(service, '.serverless', 'digits-torch.zip')).includes('model/big.pt'), 'the zip does not carry the model');
    const template = JSON.parse(fs.readFileSync(path.join(service, '.serverless', 'cloudformation-template-update-stack.json'), 'utf8'));
    const predict = template.Resources.PredictLambdaFunction.Properties;
    assert.deepEqual(predict.Environment.Variables.SERVERLESS_TORCH_MODEL_BUCKET, { Ref: 'ServerlessDeploymentBucket' });
    // /tmp holds the unpacked dependencies and the model: what the report adds up is what is set.
    const tmp = /\/tmp at cold start: ([\d.]+) MiB of (\d+) MB/.exec(output);
    assert.ok(tmp && Number(tmp[1]) > 381.5 && Number(tmp[2]) >= Number(tmp[1]), output);
    assert.equal(predict.EphemeralStorage.Size, Number(tmp![2]));
    const statements = template.Resources.IamRoleLambdaExecution.Properties.Policies[0].PolicyDocument.Statement;
    const read = statements.find((statement: any) => JSON.stringify(statement).includes(key));
    assert.deepEqual(read.Action, ['s3:GetObject']);
    assert.deepEqual(read.Resource, [{ 'Fn::Join': ['', ['arn:', { Ref: 'AWS::Partition' }, ':s3:::', { Ref: 'ServerlessDeploymentBucket' }, `/${key}`]] }]);
  });

  it('invoke local reads the packaged model by default, without S3', async () => {
    const result = await runSls('serverless', ['invoke', 'local', '-f', 'predict', '-d', '{"scale": 0.5}'], service);
    assert.equal(result.code, 0, `${result.stdout}\n${result.stderr}`);
    const answer = lastJson(result.stdout) as typeof expected;
    assert.ok(Math.abs(answer.sum - expected.sum) < 1e-2 && answer.head.every((value, i) => Math.abs(value - expected.head[i]) < 1e-4), JSON.stringify(answer));
  });

  it('a deploy uploads the model into the deployment bucket in parts; a second deploy uploads nothing', async () => {
    const first = await runSls('serverless', ['deploy'], service, deployEnv());
    assert.equal(first.code, 0, `${first.stdout}\n${first.stderr}`);
    const writes = modelWrites(first);
    assert.ok(writes.some((write) => write.method === 'createMultipartUpload' && write.key === key), JSON.stringify(writes));
    assert.ok(writes.filter((write) => write.method === 'uploadPart').length >= 20, 'multipart, in parts of 16 MiB');
    assert.ok(fs.existsSync(path.join(s3.dataDir, BUCKET)), 's3rver holds the bucket');
    for (const cli of CLIS) {
      const again = await runSls(cli, ['deploy'], service, deployEnv());
      assert.equal(again.code, 0, `${cli}:\n${again.stdout}\n${again.stderr}`);
      assert.deepEqual(modelWrites(again), [], `${cli} uploaded the model again`);
      assert.ok(again.awsRequests.some((request) => request.service === 'S3' && request.method === 'headObject' && request.params.Key === key), `${cli} asked whether the model is there`);
    }
  });

  it('deploy function goes ahead when the bucket holds the model its package names', async () => {
    const result = await runSls('serverless', ['deploy', 'function', '-f', 'predict'], service, deployEnv());
    assert.equal(result.code, 0, `${result.stdout}\n${result.stderr}`);
    assert.deepEqual(modelWrites(result), []);
    assert.ok(result.awsRequests.some((request) => request.service === 'Lambda' && request.method === 'updateFunctionCode'));
  });

  for (const cli of CLIS) {
    it(`invoke local --torch-model-from-s3 (${cli}) downloads the model from the bucket and answers what the model answers`, async () => {
      const result = await runSls(cli, ['invoke', 'local', '-f', 'predict', '-d', '{"scale": 0.5}', '--torch-model-from-s3'], service, fromS3Env());
      assert.equal(result.code, 0, `${result.stdout}\n${result.stderr}`);
      const answer = lastJson(result.stdout) as typeof expected;
      assert.ok(Math.abs(answer.sum - expected.sum) < 1e-2 && answer.head.every((value, i) => Math.abs(value - expected.head[i]) < 1e-4), JSON.stringify(answer));
      assert.match(result.stdout + result.stderr, /model from S3 [\d.]+ s \(381\.\d MiB at/);
    });
  }

  it('a model missing from the bucket is one clear error at cold start, and deploy function refuses to point at it', async () => {
    const client = new S3Client({ endpoint: s3.endpoint, forcePathStyle: true, region: 'us-east-1', credentials: { accessKeyId: 'S3RVER', secretAccessKey: 'S3RVER' } });
    await client.send(new DeleteObjectCommand({ Bucket: BUCKET, Key: key }));
    const result = await runSls('serverless', ['invoke', 'local', '-f', 'predict', '-d', '{"scale": 0.5}', '--torch-model-from-s3'], service, fromS3Env());
    assert.equal(result.code, 1);
    assert.match(result.stdout, /TORCH_MODEL_OBJECT_MISSING/);
    assert.ok(result.stdout.includes(`s3://${BUCKET}/${key}`), result.stdout);
    // deploy function cannot upload a model: it refuses to point the function at one that is not there.
    for (const cli of CLIS) {
      const deployed = await runSls(cli, ['deploy', 'function', '-f', 'predict'], service, deployEnv());
      assert.equal(deployed.code, 1, `${cli}:\n${deployed.stdout}\n${deployed.stderr}`);
      assert.match(deployed.stdout + deployed.stderr, /TORCH_MODEL_CHANGED_SINCE_DEPLOY/);
      assert.ok(!deployed.awsRequests.some((request) => request.service === 'Lambda' && request.method === 'updateFunctionCode'), `${cli} updated the function`);
    }
  });
});
