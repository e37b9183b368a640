/**
 * Preloaded into the real CLI (NODE_OPTIONS=--require) to stand in for AWS, the one part of a
 * deploy that cannot exist here. It stubs the provider's `request` with sinon, answers from
 * canned responses and records every call, so tests can assert what would have been sent.
 *
 * SERVERLESS_TORCH_AWS_CLI:  "serverless" or "osls", whose provider to stub
 * SERVERLESS_TORCH_AWS_LOG:  file that receives one JSON line per request
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

async function answer(service: string, method: string, params: any = {}): Promise<unknown> {
  record(service, method, params);
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
