import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { ResolvedConfig } from './lib/config/options';
import { functionModel } from './lib/config/model-option';
import { resolveConfig } from './lib/config/resolve-config';
import { customSchema, functionSchema } from './lib/config/schema';
import { LocalModelSource, invokePackaged, localEnvironment, localEvent } from './lib/local/invoke-local';
import { runtimeBoto3 } from './lib/local/runtime-boto3';
import { openCache } from './lib/util/cache';
import { UserLayerSource, measureUserLayers } from './lib/bundle/user-layers';
import { packageTorchFunctions } from './lib/pipeline/package-functions';
import { buildStaged } from './lib/pipeline/staging';
import { MODEL_BUCKET_ENV } from './lib/bundle/function-package';
import { bucketReference, modelReadStatement, usesOwnRole } from './lib/deploy/model-access';
import { S3Request, existingSize } from './lib/deploy/upload-model';
import { storedObjects, uploadStoredModels } from './lib/deploy/upload-models';
import { PackageOutput, TorchFunction } from './lib/pipeline/types';
import { findInterpreter } from './lib/resolve/interpreter';
import { SUPPORTED_RUNTIMES, isPythonRuntime, targetPlatform } from './lib/resolve/target';
import { formatReport } from './lib/bundle/report';
import { formatBytes, formatSeconds } from './lib/util/format';
import { TYPICAL_COLD_BUILD_BYTES, diskFullError, fullestDirectory, isDiskFull } from './lib/util/disk-space';
import { isTorchError, TorchError } from './lib/util/errors';
import { runProcess } from './lib/util/process';
import { Reporter } from './lib/util/reporter';

/* eslint-disable @typescript-eslint/no-explicit-any */
type Serverless = any;

interface PluginUtils {
  log: any;
  progress: any;
  writeText: (text: string) => void;
}

interface FunctionConfig {
  /** The deployed name the framework gives the function. */
  name?: string;
  handler?: string;
  runtime?: string;
  architecture?: string;
  memorySize?: number | string;
  timeout?: number | string;
  image?: unknown;
  layers?: unknown[];
  environment?: Record<string, unknown>;
  ephemeralStorageSize?: number | string;
  package?: { individually?: boolean; artifact?: string; patterns?: string[] };
  role?: unknown;
  /** true, false, or { model } (the function's own model, false for none). */
  torch?: boolean | { model?: unknown };
  snapStart?: boolean;
}

/**
 * The one place that touches the framework: it reads the service, runs the stages in lib/ and
 * writes their results back (artifacts, layers, handler) at the end.
 */
class ServerlessTorch {
  readonly hooks: Record<string, () => Promise<void>>;
  readonly commands = {
    torch: { type: 'entrypoint', lifecycleEvents: ['done'] },
    invoke: {
      commands: {
        local: {
          options: {
            'torch-model-from-s3': {
              usage: 'Download a model that travels in S3 as the deployed function does (endpoint: AWS_ENDPOINT_URL_S3 or AWS_ENDPOINT_URL)',
              type: 'boolean',
            },
          },
        },
      },
    },
  };

  private readonly serverless: Serverless;
  private readonly options: Record<string, any>;
  private readonly utils: PluginUtils;
  /** The key of the S3 object each function packaged in this run reads its model from. */
  private readonly modelObjects = new Map<string, { key: string; size: number }>();
  /** s3:GetObject statements for the role the framework generates, added once its template exists. */
  private readonly modelStatements: Record<string, unknown>[] = [];

  constructor(serverless: Serverless, options: Record<string, any>, utils: PluginUtils) {
    this.serverless = serverless;
    this.options = options ?? {};
    this.utils = utils;
    const schema = serverless.configSchemaHandler;
    if (schema?.defineCustomProperties) {
      schema.defineCustomProperties({ type: 'object', properties: { torch: customSchema } });
      schema.defineFunctionProperties('aws', { properties: functionSchema });
    }
    this.hooks = {
      'before:package:createDeploymentArtifacts': () => this.guard(() => this.packageService()),
      'before:package:function:package': () => this.guard(() => this.packageService(this.options.function)),
      // The framework compiles its role at setupProviderConfiguration, before the package is built.
      'before:package:compileFunctions': () => this.guard(async () => this.addModelStatements()),
      'before:invoke:local:invoke': () => this.guard(() => this.invokeLocal()),
      // After the deployment bucket surely exists, before the stack points functions at the models.
      'after:aws:deploy:deploy:checkForChanges': () => this.guard(() => this.uploadModels()),
      'before:deploy:function:deploy': () => this.guard(() => this.checkFunctionModel()),
    };
  }

  /** Errors the user can fix become the framework's error class: one message, no stack trace. */
  private async guard(step: () => Promise<void>): Promise<void> {
    try {
      await step();
    } catch (caught) {
      const error = isDiskFull(caught) && !isTorchError(caught) ? this.diskFull(caught) : caught;
      if (isTorchError(error)) {
        const UserError = this.serverless.classes.Error;
        throw new UserError(`[${error.code}] ${error.message}`, error.code);
      }
      throw error;
    }
  }

  /** A full disk met while writing files (not in pip, which says so itself): name the disk that filled up. */
  private diskFull(error: unknown): TorchError {
    const { path: file, dest } = error as NodeJS.ErrnoException & { dest?: string };
    let cacheDir: string | null = null;
    try {
      cacheDir = this.config().cacheDir;
    } catch {
      // the configuration was fine when the run started; only the disk matters here
    }
    const serverlessDir = path.join(this.serverless.serviceDir, '.serverless');
    const dir = fullestDirectory([dest && path.dirname(dest), file && path.dirname(file), cacheDir, serverlessDir]);
    const artifacts = dir.startsWith(serverlessDir);
    return diskFullError({
      dir,
      step: 'writing the packaged files',
      // What the artifacts need is in the package report of a run that fits; the cache's is measured.
      neededBytes: artifacts ? null : TYPICAL_COLD_BUILD_BYTES,
      neededFor: 'a cold build of a recent CPU torch (wheel, installed and stripped files, layer archives)',
      holds: artifacts ? 'artifacts' : 'cache',
      cause: error,
    });
  }

  private reporter(): Reporter & { done(): void } {
    const { log, progress } = this.utils;
    const bar = progress.get ? progress.get('serverless-torch') : progress.create({ message: 'serverless-torch' });
    return {
      progress: (message) => bar.notice(message),
      info: (message) => log.info(message),
      notice: (message) => log.notice(message),
      warning: (message) => log.warning(message),
      verbose: (message) => log.verbose(message),
      done: () => bar.remove(),
    };
  }

  private config(): ResolvedConfig {
    return resolveConfig(this.serverless.service.custom?.torch, this.serverless.serviceDir);
  }

  private runtimeOf(fn: FunctionConfig): string | undefined {
    return fn.runtime ?? this.serverless.service.provider.runtime;
  }

  /** Python functions that have not opted out; a function asking for torch on another runtime is a mistake. */
  private torchFunctionNames(only?: string): string[] {
    const service = this.serverless.service;
    const names: string[] = only ? [only] : service.getAllFunctions();
    return names.filter((name) => {
      const fn: FunctionConfig = service.getFunction(name);
      if (fn.torch !== undefined && typeof fn.torch !== 'boolean' && (typeof fn.torch !== 'object' || fn.torch === null || Array.isArray(fn.torch))) {
        throw new TorchError('TORCH_CONFIG_INVALID', `functions.${name}.torch is ${JSON.stringify(fn.torch)}, but it must be true, false or { model }.`);
      }
      if (fn.image || fn.torch === false) return false;
      const runtime = this.runtimeOf(fn);
      if (!isPythonRuntime(runtime)) {
        if (fn.torch !== undefined) {
          throw new TorchError(
            'TORCH_UNSUPPORTED_RUNTIME',
            `functions.${name} sets "torch", but its runtime ${runtime} is not Python: PyTorch functions need ` +
              `one of ${SUPPORTED_RUNTIMES.join(', ')}. Change the function's runtime, or remove its "torch".`,
          );
        }
        return false;
      }
      return true;
    });
  }

  private packager(): any {
    const plugin = this.serverless.pluginManager.plugins.find(
      (candidate: any) => typeof candidate.resolveFilePathsFromPatterns === 'function' && typeof candidate.getExcludes === 'function' && typeof candidate.getIncludes === 'function',
    );
    if (!plugin) throw new Error('The framework\'s Package plugin was not found: this serverless version is not supported');
    return plugin;
  }

  /**
   * The function's own layers as plain data: a service layer (a `{ Ref }` to layers.X) is a
   * directory (layers.X.path) or a zip (layers.X.package.artifact); anything else (an ARN) was
   * published elsewhere.
   */
  private userLayerSources(fn: FunctionConfig): UserLayerSource[] {
    const service = this.serverless.service;
    const naming = this.serverless.getProvider('aws').naming;
    const specs: unknown[] = fn.layers ?? service.provider.layers ?? [];
    return specs.map((spec): UserLayerSource => {
      const ref = (spec as { Ref?: unknown } | null)?.Ref;
      const key = typeof ref === 'string' ? Object.keys(service.layers ?? {}).find((name) => naming.getLambdaLayerLogicalId(name) === ref) : undefined;
      if (!key) return { label: typeof spec === 'string' ? spec : JSON.stringify(spec), kind: 'remote' };
      const layer = service.layers[key];
      if (layer.package?.artifact) return { label: key, kind: 'zip', location: path.resolve(this.serverless.serviceDir, layer.package.artifact) };
      if (layer.path) return { label: key, kind: 'dir', location: path.resolve(this.serverless.serviceDir, layer.path) };
      return { label: key, kind: 'remote' };
    });
  }

  /**
   * The files the framework's patterns select for the service package (`functionPackage` null) or
   * for one function's. Its own resolveFilePaths* also run `npm ls` twice to leave out Node.js dev
   * dependencies (measured 1.5 to 2 s of a warm package, and 85 MiB of resident memory); a torch
   * function never ships node_modules, so the plugin asks for the patterns alone.
   */
  private async packagedFiles(packager: any, functionPackage: { exclude?: string[]; include?: string[]; patterns?: string[] } | null): Promise<string[]> {
    return packager.resolveFilePathsFromPatterns({
      exclude: packager.getExcludes(functionPackage?.exclude ?? [], true),
      include: packager.getIncludes(functionPackage ? [...(functionPackage.include ?? []), ...(functionPackage.patterns ?? [])] : undefined),
    });
  }

  private async describeFunctions(names: string[]): Promise<TorchFunction[]> {
    const service = this.serverless.service;
    const config = this.config();
    const packager = this.packager();
    let serviceFiles: string[] | null = null;
    const described: TorchFunction[] = [];
    for (const name of names) {
      const fn: FunctionConfig = service.getFunction(name);
      if (fn.package?.artifact && !fn.package.artifact.includes(`${path.sep}.serverless${path.sep}`)) {
        throw new TorchError(
          'TORCH_CUSTOM_ARTIFACT',
          `functions.${name}.package.artifact is "${fn.package.artifact}", but serverless-torch builds the package of ` +
            'torch functions itself (to add the handler shim). Remove package.artifact, or set "torch: false" on the function.',
        );
      }
      const individually = Boolean(service.package?.individually || fn.package?.individually);
      let files: string[];
      if (individually) {
        files = await this.packagedFiles(packager, fn.package ?? {});
      } else {
        serviceFiles = serviceFiles ?? (await this.packagedFiles(packager, null));
        files = serviceFiles!;
      }
      const provider = service.provider;
      described.push({
        name,
        handler: String(fn.handler),
        runtime: String(this.runtimeOf(fn)),
        architecture: String(fn.architecture ?? provider.architecture ?? 'x86_64'),
        memorySize: Number(fn.memorySize ?? provider.memorySize ?? 1024),
        userLayers: await measureUserLayers(this.userLayerSources(fn)),
        ephemeralStorageSize: fn.ephemeralStorageSize ? Number(fn.ephemeralStorageSize) : provider.ephemeralStorageSize ? Number(provider.ephemeralStorageSize) : null,
        snapStart: fn.snapStart === true,
        files,
        artifactName: individually ? `${name}.zip` : `${service.service}-torch.zip`,
        model: functionModel(fn.torch, name, config),
      });
    }
    return described;
  }

  private async build(names: string[], outputDir: string): Promise<PackageOutput> {
    const reporter = this.reporter();
    const started = Date.now();
    const rssBefore = process.memoryUsage().rss;
    try {
      const config = this.config();
      const functions = await this.describeFunctions(names);
      const naming = { service: String(this.serverless.service.service), stage: String(this.serverless.getProvider('aws').getStage()) };
      return await packageTorchFunctions({ config, functions, naming, outputDir, runner: runProcess, reporter });
    } finally {
      reporter.done();
      // ru_maxrss: the process's peak so far, the framework's share included (it was rssBefore when the plugin began).
      reporter.verbose(
        `serverless-torch took ${formatSeconds(Date.now() - started)}; resident memory ${formatBytes(rssBefore)} when it began, ` +
          `peak ${formatBytes(process.resourceUsage().maxRSS * 1024)} by its end`,
      );
    }
  }

  private async packageService(only?: string): Promise<void> {
    const names = this.torchFunctionNames(only);
    if (names.length === 0) return;
    const serverlessDir = path.join(this.serverless.serviceDir, '.serverless');
    const output = await buildStaged(serverlessDir, (staging) => this.build(names, staging));
    this.applyToService(output, Boolean(only));
    for (const fn of output.functions) this.utils.log.notice(formatReport(fn.report));
  }

  private applyToService(output: PackageOutput, singleFunction: boolean): void {
    const service = this.serverless.service;
    const naming = this.serverless.getProvider('aws').naming;
    if (!singleFunction) {
      service.layers = service.layers ?? {};
      for (const layer of output.layers) {
        service.layers[layer.name] = {
          name: layer.layerName,
          package: { artifact: layer.artifact },
          description: layer.description,
          compatibleRuntimes: [layer.runtime],
          compatibleArchitectures: [layer.architecture],
        };
      }
    }
    const bucket = bucketReference(service.provider.deploymentBucket);
    for (const fn of output.functions) {
      const config: FunctionConfig = service.getFunction(fn.name);
      const userLayers = config.layers ?? service.provider.layers ?? [];
      // individually: the framework's deploy looks for <service>.zip for any function without it,
      // even one whose package.artifact is set (its extendedValidate), and this zip is not that one.
      config.package = { ...(config.package ?? {}), artifact: fn.artifact, individually: true };
      config.handler = fn.handler;
      config.environment = { ...(config.environment ?? {}), ...fn.environment, ...(fn.modelObject ? { [MODEL_BUCKET_ENV]: bucket } : {}) };
      if (fn.modelObject) {
        this.grantModelRead(fn.name, config, modelReadStatement(bucket, fn.modelObject.key));
        this.modelObjects.set(fn.name, fn.modelObject);
      }
      config.layers = [...userLayers, ...fn.layers.map((name) => ({ Ref: naming.getLambdaLayerLogicalId(name) }))];
      if (fn.ephemeralStorageSize !== null) config.ephemeralStorageSize = fn.ephemeralStorageSize;
    }
    if (singleFunction) {
      this.utils.log.notice(
        'deploy function updates the code and configuration only: the dependency layers stay those of the last ' +
          'full deploy. Run "serverless deploy" when requirements or the torch version changed.',
      );
    }
  }

  /**
   * Adds the statement to the role the framework generates; a role the user gives cannot be
   * changed here, so the user hears what to add to it.
   */
  private grantModelRead(name: string, config: FunctionConfig, statement: Record<string, unknown>): void {
    const provider = this.serverless.service.provider;
    if (usesOwnRole(provider, config)) {
      this.utils.log.warning(
        `Function "${name}" reads its model from S3 with a role of your own: add this statement to it, or the cold start ` +
          `fails with TORCH_MODEL_ACCESS_DENIED:\n${JSON.stringify(statement, null, 2)}`,
      );
      return;
    }
    if (!this.modelStatements.some((existing) => JSON.stringify(existing) === JSON.stringify(statement))) this.modelStatements.push(statement);
  }

  /** Puts the model statements into the role the framework compiled (IamRoleLambdaExecution). */
  private addModelStatements(): void {
    if (!this.modelStatements.length) return;
    const resources = this.serverless.service.provider.compiledCloudFormationTemplate?.Resources ?? {};
    const role = resources[this.serverless.getProvider('aws').naming.getRoleLogicalId()];
    const statements = role?.Properties?.Policies?.[0]?.PolicyDocument?.Statement;
    if (!Array.isArray(statements)) {
      this.utils.log.warning(
        'The models in S3 need s3:GetObject, but the stack has no role generated by the framework to add it to; add these ' +
          `statements to the functions' role, or the cold start fails with TORCH_MODEL_ACCESS_DENIED:\n${JSON.stringify(this.modelStatements, null, 2)}`,
      );
      return;
    }
    statements.push(...this.modelStatements);
  }

  /** The framework's provider.request for S3, or (osls, which has no provider.request) an AWS SDK v3 client of the same shape. */
  private async s3Request(): Promise<S3Request> {
    const provider = this.serverless.getProvider('aws');
    if (typeof provider.getAwsSdkV3Config !== 'function') return (service, method, params) => provider.request(service, method, params);
    // The SDK the framework itself ships (bin/serverless.js is its entry point).
    const frameworkDir = path.dirname(path.dirname(require.main?.filename ?? path.join(process.cwd(), 'x', 'x')));
    const sdk = require(require.resolve('@aws-sdk/client-s3', { paths: [frameworkDir, process.cwd()] }));
    const endpoint = process.env.AWS_ENDPOINT_URL_S3 || process.env.AWS_ENDPOINT_URL;
    // A custom endpoint (a local S3) is addressed by path, as boto3 does in the shim.
    const client = new sdk.S3Client({ ...(await provider.getAwsSdkV3Config()), ...(endpoint ? { forcePathStyle: true } : {}) });
    return (_service, method, params) => client.send(new sdk[`${method.charAt(0).toUpperCase()}${method.slice(1)}Command`](params));
  }

  /** The directory the package is in: --package, package.path, or .serverless/. */
  private packageDir(): string {
    const given = this.options.package ?? this.serverless.service.package?.path;
    return path.resolve(this.serverless.serviceDir, given ?? '.serverless');
  }

  /** Deploy: each model the package stored for S3 goes to the deployment bucket, unless it is there. */
  private async uploadModels(): Promise<void> {
    if (storedObjects(this.packageDir()).length === 0) return;
    const provider = this.serverless.getProvider('aws');
    const reporter = this.reporter();
    try {
      const bucketConfig = this.serverless.service.provider.deploymentBucketObject ?? {};
      const objectParams = {
        ...(bucketConfig.serverSideEncryption ? { ServerSideEncryption: bucketConfig.serverSideEncryption } : {}),
        ...(bucketConfig.sseKMSKeyId ? { SSEKMSKeyId: bucketConfig.sseKMSKeyId } : {}),
      };
      await uploadStoredModels({ packageDir: this.packageDir(), request: await this.s3Request(), bucket: await provider.getServerlessDeploymentBucketName(), objectParams, reporter });
    } finally {
      reporter.done();
    }
  }

  /**
   * deploy function cannot give the function's role access to a new object: a model that
   * changed since the last full deploy (its object is not in the bucket) needs a full deploy.
   */
  private async checkFunctionModel(): Promise<void> {
    const name: string = this.options.function;
    const object = this.modelObjects.get(name);
    if (!object) return;
    const bucket = await this.serverless.getProvider('aws').getServerlessDeploymentBucketName();
    // The key names the content: an object there with the packaged size is the packaged model.
    if ((await existingSize(await this.s3Request(), bucket, object.key)) === object.size) return;
    throw new TorchError(
      'TORCH_MODEL_CHANGED_SINCE_DEPLOY',
      `Function "${name}" reads its model from s3://${bucket}/${object.key}, which the last deploy did not upload: the model ` +
        'changed since then. deploy function cannot upload it nor let the function\'s role read it. Run "serverless deploy".',
    );
  }

  /** Where invoke local takes a model stored for S3 from: the packaged file, or (--torch-model-from-s3) the bucket. */
  private async localModelSource(pythonVersion: string): Promise<LocalModelSource> {
    if (!this.options['torch-model-from-s3']) return { fromS3: false };
    const bucket = process.env[MODEL_BUCKET_ENV] || (await this.serverless.getProvider('aws').getServerlessDeploymentBucketName());
    const reporter = this.reporter();
    try {
      const config = this.config();
      const runtimeDir = await runtimeBoto3({ config, pythonVersion, cache: openCache(config.cacheDir), runner: runProcess, reporter });
      return { fromS3: true, bucket, runtimeDir };
    } finally {
      reporter.done();
    }
  }

  private async invokeLocal(): Promise<void> {
    const name: string = this.options.function;
    if (!this.torchFunctionNames(name).length) return;
    const service = this.serverless.service;
    const fn: FunctionConfig = service.getFunction(name);
    const root = fs.mkdtempSync(path.join(os.tmpdir(), 'serverless-torch-invoke-'));
    const reporter = this.reporter();
    try {
      // The interpreter first: without one, packaging would be wasted time.
      const target = targetPlatform(String(this.runtimeOf(fn)), String(fn.architecture ?? service.provider.architecture ?? 'x86_64'));
      const interpreter = await findInterpreter(target, runProcess);
      const output = await this.build([name], path.join(root, 'artifacts'));
      const result = await invokePackaged({
        output,
        userLayers: this.userLayerSources(fn),
        root,
        interpreter,
        cacheDir: this.config().cacheDir,
        event: localEvent(this.options.data),
        context: this.options.context,
        environment: localEnvironment({
          configuredNames: Object.keys({ ...service.provider.environment, ...fn.environment }),
          optionEnv: this.options.env,
          processEnv: process.env,
        }),
        functionName: fn.name ?? name,
        memorySize: Number(fn.memorySize ?? service.provider.memorySize ?? 1024),
        timeout: Number(fn.timeout ?? service.provider.timeout ?? 6),
        artifactsDir: path.join(root, 'artifacts'),
        model: await this.localModelSource(interpreter.version),
        reporter,
      });
      this.utils.writeText(result.text);
      if (result.failed) process.exitCode = 1;
    } finally {
      reporter.done();
      fs.rmSync(root, { recursive: true, force: true });
    }
    // The framework's own invoke would run the handler again, unpackaged (or in Docker for 3.12+).
    await this.serverless.pluginManager.spawn('torch', { terminateLifecycleAfterExecution: true });
  }
}

export = ServerlessTorch;
