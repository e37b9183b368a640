import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { ResolvedConfig } from './lib/config/options';
import { resolveConfig } from './lib/config/resolve-config';
import { customSchema, functionSchema } from './lib/config/schema';
import { invokePackaged, localEnvironment } from './lib/local/invoke-local';
import { packageTorchFunctions } from './lib/pipeline/package-functions';
import { buildStaged } from './lib/pipeline/staging';
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
  torch?: boolean;
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
  };

  private readonly serverless: Serverless;
  private readonly options: Record<string, any>;
  private readonly utils: PluginUtils;

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
      'before:invoke:local:invoke': () => this.guard(() => this.invokeLocal()),
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
      if (fn.torch !== undefined && typeof fn.torch !== 'boolean') {
        throw new TorchError('TORCH_CONFIG_INVALID', `functions.${name}.torch is ${JSON.stringify(fn.torch)}, but it must be true or false.`);
      }
      if (fn.image || fn.torch === false) return false;
      const runtime = this.runtimeOf(fn);
      if (!isPythonRuntime(runtime)) {
        if (fn.torch === true) {
          throw new TorchError(
            'TORCH_UNSUPPORTED_RUNTIME',
            `functions.${name} sets "torch: true", but its runtime ${runtime} is not Python: PyTorch functions need ` +
              `one of ${SUPPORTED_RUNTIMES.join(', ')}. Change the function's runtime, or remove "torch: true".`,
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
   * The files the framework's patterns select for the service package (`functionPackage` null) or
   * for one function's. Its own resolveFilePaths* also run `npm ls` twice to leave out Node.js dev
   * dependencies (measured 1.5 to 2 s of a warm package, and 85 MiB of resident memory); a torch
   * function never ships node_modules, so the plugin asks for the patterns alone.
   */
  private async packagedFiles(packager: any, functionPackage: { exclude?: string[]; include?: string[]; patterns?: string[] } | null): Promise<string[]> {
    if (typeof packager.resolveFilePathsFromPatterns !== 'function') {
      throw new Error("The framework's Package plugin has no resolveFilePathsFromPatterns: this serverless version is not supported");
    }
    return packager.resolveFilePathsFromPatterns({
      exclude: packager.getExcludes(functionPackage?.exclude ?? [], true),
      include: packager.getIncludes(functionPackage ? [...(functionPackage.include ?? []), ...(functionPackage.patterns ?? [])] : undefined),
    });
  }

  private async describeFunctions(names: string[]): Promise<TorchFunction[]> {
    const service = this.serverless.service;
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
        userLayers: fn.layers ?? provider.layers ?? [],
        ephemeralStorageSize: fn.ephemeralStorageSize ? Number(fn.ephemeralStorageSize) : provider.ephemeralStorageSize ? Number(provider.ephemeralStorageSize) : null,
        snapStart: fn.snapStart === true,
        files,
        artifactName: individually ? `${name}.zip` : `${service.service}-torch.zip`,
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
      return await packageTorchFunctions({ config, functions, outputDir, runner: runProcess, reporter });
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
          package: { artifact: layer.artifact },
          description: layer.description,
          compatibleRuntimes: [layer.runtime],
          compatibleArchitectures: [layer.architecture],
        };
      }
    }
    for (const fn of output.functions) {
      const config: FunctionConfig = service.getFunction(fn.name);
      const userLayers = config.layers ?? service.provider.layers ?? [];
      config.package = { ...(config.package ?? {}), artifact: fn.artifact };
      config.handler = fn.handler;
      config.environment = { ...(config.environment ?? {}), ...fn.environment };
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
        root,
        interpreter,
        cacheDir: this.config().cacheDir,
        event: this.options.data ?? '',
        environment: localEnvironment([service.provider.environment, fn.environment], process.env),
        functionName: fn.name ?? name,
        memorySize: Number(fn.memorySize ?? service.provider.memorySize ?? 1024),
        timeout: Number(fn.timeout ?? service.provider.timeout ?? 6),
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
