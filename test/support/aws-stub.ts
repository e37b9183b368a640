/**
 * Preloaded into the real CLI (NODE_OPTIONS=--require) to stand in for AWS, the one part of a
 * deploy that cannot exist here. It stubs the provider's `request` with sinon, answers from
 * canned responses and records every call, so tests can assert what would have been sent.
 *
 * SERVERLESS_TORCH_AWS_CLI:  "serverless" or "osls", whose provider to stub
 * SERVERLESS_TORCH_AWS_LOG:  file that receives one JSON line per request
 * SERVERLESS_TORCH_S3_ENDPOINT, SERVERLESS_TORCH_S3_BUCKET: when set, the stack is deployed
 *   already with that deployment bucket, CloudFormation answers a deploy as done, and every S3
 *   request goes to the real S3-protocol server at that endpoint (s3rver on 127.0.0.1).
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import * as sinon from 'sinon';

const cli = process.env.SERVERLESS_TORCH_AWS_CLI ?? 'serverless';
const logFile = process.env.SERVERLESS_TORCH_AWS_LOG;
const repo = path.resolve(__dirname, '..', '..', '..');
// eslint-disable-next-line @typescript-eslint/no-require-imports
const cliDir = path.join(repo, 'node_modules', cli);
const AwsProvider = require(path.join(cliDir, 'lib', 'plugins', 'aws', 'provider.js'));

function record(service: string, method: string, params: any): void {
  if (!logFile) return;
  const copy = { ...params };
  // Request bodies are not logged (a model upload is hundreds of megabytes).
  if (copy.Body !== undefined) copy.Body = { bytes: Buffer.isBuffer(copy.Body) ? copy.Body.length : null };
  // Zip bodies are saved beside the log so a test can compare them byte for byte.
  if (Buffer.isBuffer(copy.ZipFile)) {
    const zipPath = `${logFile}.${service}.${method}.${Date.now()}.zip`;
    fs.writeFileSync(zipPath, copy.ZipFile);
    copy.ZipFile = { savedTo: zipPath, bytes: params.ZipFile.length };
  }
  fs.appendFileSync(logFile, JSON.stringify({ service, method, params: copy }) + '\n');
}

let functionConfiguration: Record<string, unknown> = {
  Handler: 'handler.predict',
  Runtime: 'python3.11',
  MemorySize: 3008,
  Timeout: 30,
  Environment: { Variables: {} },
  Layers: [],
  State: 'Active',
  LastUpdateStatus: 'Successful',
  PackageType: 'Zip',
  Architectures: ['x86_64'],
};

const s3Endpoint = process.env.SERVERLESS_TORCH_S3_ENDPOINT;
const deployedBucket = process.env.SERVERLESS_TORCH_S3_BUCKET;
const started = Date.now();

/** A deploy against a stack that exists, with the deployment bucket on the local S3 server. */
function deployedStack(method: string, params: any): unknown {
  const stack = { StackName: params.StackName, StackId: `arn:aws:cloudformation:us-east-1:123456789012:stack/${params.StackName}/1`, StackStatus: 'UPDATE_COMPLETE', CreationTime: new Date(started) };
  switch (method) {
    case 'describeStacks':
      return { Stacks: [{ ...stack, Outputs: [{ OutputKey: 'ServerlessDeploymentBucketName', OutputValue: deployedBucket }] }] };
    case 'describeStackResource':
      return { StackResourceDetail: { LogicalResourceId: params.LogicalResourceId, PhysicalResourceId: deployedBucket, ResourceStatus: 'UPDATE_COMPLETE' } };
    case 'validateTemplate':
      return {};
    case 'getTemplate':
      return { TemplateBody: '{}' };
    case 'updateStack':
      return { StackId: stack.StackId };
    // The framework's default deploymentMethod: a change set, created, described, executed.
    case 'deleteChangeSet':
    case 'executeChangeSet':
    case 'setStackPolicy':
      return {};
    case 'createChangeSet':
      return { Id: `${stack.StackId}/changeSet`, StackId: stack.StackId };
    case 'describeChangeSet':
      return { ChangeSetName: params.ChangeSetName, StackId: stack.StackId, Status: 'CREATE_COMPLETE', Changes: [{ Type: 'Resource' }] };
    case 'describeStackEvents':
      return { StackEvents: [{ ...stack, EventId: 'done', LogicalResourceId: params.StackName, ResourceType: 'AWS::CloudFormation::Stack', ResourceStatus: 'UPDATE_COMPLETE', Timestamp: new Date() }] };
    case 'listStackResources':
      return { StackResourceSummaries: [] };
    default:
      throw new Error(`The AWS stub has no answer for CloudFormation.${method}`);
  }
}

let s3v2: any;
/** serverless@3's S3 requests, sent for real to the local server with the SDK v2 the framework uses. */
function forwardS3v2(method: string, params: any): Promise<unknown> {
  if (!s3v2) {
    const AWS = require(require.resolve('aws-sdk', { paths: [cliDir] }));
    s3v2 = new AWS.S3({ endpoint: s3Endpoint, s3ForcePathStyle: true, accessKeyId: 'S3RVER', secretAccessKey: 'S3RVER', region: 'us-east-1' });
  }
  return (method === 'upload' ? s3v2.upload(params) : s3v2[method](params)).promise();
}

async function answer(service: string, method: string, params: any = {}): Promise<unknown> {
  record(service, method, params);
  if (deployedBucket && service === 'CloudFormation') return deployedStack(method, params);
  if (s3Endpoint && service === 'S3') return forwardS3v2(method, params);
  switch (`${service}.${method}`) {
    case 'CloudFormation.describeStacks':
    case 'CloudFormation.describeStackResource':
    case 'CloudFormation.describeStackResources':
      throw Object.assign(new Error(`Stack with id ${params.StackName} does not exist`), { providerError: { code: 'ValidationError' } });
    // What `invoke local` asks to resolve a `Ref` in the environment (a stack resource's physical id).
    case 'CloudFormation.listStackResources':
      return { StackResourceSummaries: [{ LogicalResourceId: 'ModelBucket', PhysicalResourceId: 'digits-dev-modelbucket-1a2b3c', ResourceType: 'AWS::S3::Bucket' }] };
    case 'Lambda.getFunction':
      return { Configuration: { ...functionConfiguration, FunctionName: params.FunctionName } };
    case 'Lambda.updateFunctionCode':
      return { ...functionConfiguration, FunctionName: params.FunctionName };
    case 'Lambda.updateFunctionConfiguration':
      functionConfiguration = { ...functionConfiguration, ...params };
      return { ...functionConfiguration };
    case 'STS.getCallerIdentity':
      return { Account: '123456789012', Arn: 'arn:aws:iam::123456789012:user/test', UserId: 'TEST' };
    default:
      throw new Error(`The AWS stub has no answer for ${service}.${method}`);
  }
}

// serverless@3 sends every request through provider.request (AWS SDK v2).
sinon.stub(AwsProvider.prototype, 'request').callsFake(answer as (...args: unknown[]) => Promise<unknown>);

// osls 4 uses AWS SDK v3 clients directly: answer their send() the same way.
const sdkClients: Record<string, [string, string]> = {
  CloudFormation: ['@aws-sdk/client-cloudformation', 'CloudFormationClient'],
  Lambda: ['@aws-sdk/client-lambda', 'LambdaClient'],
  STS: ['@aws-sdk/client-sts', 'STSClient'],
};
// With a local S3 server, osls's S3 client (and the plugin's, the same class) really sends its
// requests there, addressed by path, after they are recorded.
if (s3Endpoint) {
  try {
    const { S3Client } = require(require.resolve('@aws-sdk/client-s3', { paths: [cliDir] }));
    const send = S3Client.prototype.send;
    const local = new S3Client({ endpoint: s3Endpoint, forcePathStyle: true, region: 'us-east-1', credentials: { accessKeyId: 'S3RVER', secretAccessKey: 'S3RVER' } });
    sinon.stub(S3Client.prototype, 'send').callsFake(async (command: any) => {
      const method = command.constructor.name.replace(/Command$/, '');
      record('S3', method.charAt(0).toLowerCase() + method.slice(1), command.input);
      return send.call(local, command);
    });
  } catch {
    // this CLI has no SDK v3 S3 client
  }
}

for (const [service, [moduleName, className]] of Object.entries(sdkClients)) {
  let client: any;
  try {
    client = require(require.resolve(moduleName, { paths: [cliDir] }))[className];
  } catch {
    continue;
  }
  sinon.stub(client.prototype, 'send').callsFake(async (command: any) => {
    const method = command.constructor.name.replace(/Command$/, '');
    try {
      return await answer(service, method.charAt(0).toLowerCase() + method.slice(1), command.input);
    } catch (error: any) {
      // SDK v3 errors carry their code as the name.
      throw Object.assign(error, { name: error.providerError?.code ?? error.name, Code: error.providerError?.code });
    }
  });
}
