import * as fs from 'node:fs';
import * as path from 'node:path';
import { openCache } from '../util/cache';
import { ResolvedConfig } from '../config/options';
import { DependencyTree, buildDependencyTree } from '../resolve/dependency-tree';
import { checkSnapStart, initBudgetWarning } from '../bundle/init-budget';
import { diskFullError, freeBytes, isDiskFull } from '../util/disk-space';
import { TorchError } from '../util/errors';
import { formatBytes } from '../util/format';
import { collectFunctionContents, FunctionContents, HANDLER_ENV, SHIM_HANDLER, writeFunctionPackage } from '../bundle/function-package';
import { MAX_LAYERS, UNZIPPED_LIMIT, DEFAULT_TMP_MB, ephemeralStorageNeeded } from '../bundle/layer-plan';
import { BuiltLayers, buildLayers } from '../bundle/layer-build';
import { inspectModel, ModelManifest } from '../model/inspect';
import { checkLoaderSafety } from '../model/safety';
import { pinnedVersion } from '../resolve/version';
import { Runner } from '../util/process';
import { PackagedModel, QuantizationReport, checkQuantizable, engineFor, quantizeModel } from '../model/quantize';
import { Reporter, silentReporter } from '../util/reporter';
import { readRequirements } from '../config/requirements';
import { TargetPlatform, targetId, targetPlatform } from '../resolve/target';

/** A torch function as the plugin reads it from serverless.yml. */
export interface TorchFunction {
  name: string;
  handler: string;
  runtime: string;
  architecture: string;
  memorySize: number;
  /** Layers the user already attaches (function or provider level). */
  userLayers: unknown[];
  ephemeralStorageSize: number | null;
  /** The function's `snapStart` property (python3.12+): init runs once, before a snapshot. */
  snapStart?: boolean;
  /** Files the framework's packager selected, relative to the service directory. */
  files: string[];
  /** Name of the zip: functions packaged together share one. */
  artifactName: string;
}

export interface LayerOutput {
  /** Key in service.layers. */
  name: string;
  artifact: string;
  runtime: string;
  architecture: string;
  description: string;
  bytes: number;
  unzippedBytes: number;
}

export interface FunctionOutput {
  name: string;
  artifact: string;
  handler: string;
  environment: Record<string, string>;
  layers: string[];
  ephemeralStorageSize: number | null;
  report: FunctionReport;
}

export interface FunctionReport {
  functionName: string;
  target: string;
  torch: { version: string; wheel: string };
  code: { unzippedBytes: number; zippedBytes: number };
  model: { bytes: number; loader: string };
  /** What quantize: dynamic did, with the engine this function's architecture runs it with. */
  quantization: (QuantizationReport & { engine: string }) | null;
  layers: { name: string; role: string; unzippedBytes: number; zippedBytes: number }[];
  totalUnzippedBytes: number;
  tmpBytes: number;
  ephemeralStorageSize: number;
}

export interface PackageOutput {
  functions: FunctionOutput[];
  layers: LayerOutput[];
  trees: DependencyTree[];
}

function checkLayerCount(fn: TorchFunction, ours: number): void {
  if (fn.userLayers.length + ours <= MAX_LAYERS) return;
  throw new TorchError(
    'TORCH_TOO_MANY_LAYERS',
    `Function "${fn.name}" already has ${fn.userLayers.length} layers; serverless-torch needs ${ours} more ` +
      `and Lambda allows ${MAX_LAYERS} in all. Remove ${fn.userLayers.length + ours - MAX_LAYERS} of its layers ` +
      '(their Python packages can go in requirements.txt instead).',
  );
}

/** A function whose own package (code and model) is over Lambda's limit fails before any dependency is resolved. */
function checkFunctionAlone(fn: TorchFunction, contents: FunctionContents, model: ModelManifest): void {
  if (contents.unzippedBytes <= UNZIPPED_LIMIT) return;
  throw new TorchError(
    'TORCH_PACKAGE_TOO_LARGE',
    `Function "${fn.name}" is ${contents.unzippedBytes.toLocaleString('en-US')} bytes unzipped before any dependency ` +
      `(model ${model.path} ${contents.modelBytes.toLocaleString('en-US')}), over Lambda's limit of ` +
      `${UNZIPPED_LIMIT.toLocaleString('en-US')} bytes for code plus layers. Shrink the model (quantize: dynamic, or a ` +
      'smaller architecture), leave files out with package.patterns, or deploy a container image (up to 10 GB).',
  );
}

function layerName(target: TargetPlatform, role: string): string {
  const python = target.pythonVersion.replace('.', '');
  const arch = target.architecture === 'arm64' ? 'Arm64' : 'X8664';
  return `torch${role === 'deps' ? 'Deps' : 'Packed'}Py${python}${arch}`;
}

/**
 * Builds everything a deploy of the torch functions needs, into `outputDir`. Nothing here touches
 * the framework: the plugin class writes the result back into the service in one place.
 */
export async function packageTorchFunctions(options: {
  config: ResolvedConfig;
  functions: TorchFunction[];
  outputDir: string;
  runner: Runner;
  reporter: Reporter;
}): Promise<PackageOutput> {
  const { config, functions, outputDir, runner, reporter } = options;
  const model: ModelManifest = await inspectModel(config.model);
  reporter.verbose(`Model ${model.path}: ${model.loader} loader${model.factory ? ` with factory ${model.factory}` : ''}, sha256 ${model.sha256.slice(0, 12)}…`);
  const requirements = readRequirements(config.requirementsPath, config.torchVersion);
  if (!requirements.torchSpecifier) {
    reporter.warning('torch is not pinned (requirements.txt or custom.torch.torchVersion): the version first resolved stays cached until the requirements change. Pin it, e.g. torch==2.13.0.');
  }
  // An exact pin settles the torch version now: refuse an unsafe loader before minutes of pip.
  const pinned = pinnedVersion(requirements.torchSpecifier);
  if (pinned) {
    const { refusal } = checkLoaderSafety({ loader: model.loader, torchVersion: pinned, allowUnsafeTorch: config.allowUnsafeTorch, modelPath: model.path });
    if (refusal) throw refusal;
  }
  if (config.quantize) {
    checkQuantizable(model);
  } else if (config.sampleInput) {
    reporter.warning('custom.torch.sampleInput is set but quantize is false: the sample is only used to measure quantization, so it is ignored.');
  }
  const cache = openCache(config.cacheDir);

  const collect = (fn: TorchFunction, packaged: PackagedModel, to: Reporter) =>
    collectFunctionContents({
      serviceDir: config.serviceDir,
      files: fn.files,
      model: packaged.manifest,
      modelSource: packaged.source,
      handlers: functions.filter((other) => other.artifactName === fn.artifactName).map((other) => ({ functionName: other.name, handler: other.handler })),
      reporter: to,
    });

  // Check every function before the long work, so a mistake is reported in seconds.
  let packagedModel: PackagedModel = { manifest: model, source: config.model.sourcePath };
  const contentsByArtifact = new Map<string, FunctionContents>();
  const targets = new Map<string, TargetPlatform>();
  for (const fn of functions) {
    const target = targetPlatform(fn.runtime, fn.architecture);
    targets.set(targetId(target), target);
    checkLayerCount(fn, 1);
    if (!contentsByArtifact.has(fn.artifactName)) contentsByArtifact.set(fn.artifactName, collect(fn, packagedModel, reporter));
    // Quantizing may shrink the model below the limit, so only the unquantized package is judged this early.
    if (!config.quantize) checkFunctionAlone(fn, contentsByArtifact.get(fn.artifactName)!, model);
  }

  const trees = new Map<string, DependencyTree>();
  for (const [id, target] of targets) {
    trees.set(id, await buildDependencyTree({ config, target, requirements, cache, runner, reporter }));
  }
  // The resolved versions are what ships, pinned or not: check them all, then warn once each.
  const loaderWarnings = new Set<string>();
  for (const version of new Set([...trees.values()].map((tree) => tree.torch.version))) {
    const safety = checkLoaderSafety({ loader: model.loader, torchVersion: version, allowUnsafeTorch: config.allowUnsafeTorch, modelPath: model.path });
    if (safety.refusal) throw safety.refusal;
    safety.warnings.forEach((warning) => loaderWarnings.add(warning));
  }
  loaderWarnings.forEach((warning) => reporter.warning(warning));

  let quantization: QuantizationReport | null = null;
  if (config.quantize) {
    const versions = [...new Set([...trees.values()].map((tree) => tree.torch.version))];
    if (versions.length > 1) {
      throw new TorchError(
        'TORCH_QUANTIZE_TORCH_VERSIONS_DIFFER',
        `The functions resolved different torch versions (${versions.join(', ')}), but the quantized model is built once ` +
          'with the version they run. Pin torch (requirements.txt or custom.torch.torchVersion).',
      );
    }
    const architectures = [...new Set([...targets.values()].map((target) => target.architecture))];
    const quantized = await quantizeModel({ config, model, torchVersion: versions[0], architectures, cache, runner, reporter });
    quantization = quantized.report;
    packagedModel = quantized.packaged;
    // The packaged file replaces the service's model in every function package.
    for (const fn of functions) contentsByArtifact.set(fn.artifactName, collect(fn, packagedModel, silentReporter));
  }

  fs.mkdirSync(outputDir, { recursive: true });
  const zipped = new Map<string, { path: string; bytes: number }>();
  for (const [artifactName, contents] of contentsByArtifact) {
    reporter.progress(`Zipping function package ${artifactName}`);
    let result;
    try {
      result = await writeFunctionPackage(path.join(outputDir, artifactName), contents);
    } catch (error) {
      if (!isDiskFull(error)) throw error;
      throw diskFullError({ dir: outputDir, step: `zipping ${artifactName}`, neededBytes: contents.unzippedBytes, neededFor: `${artifactName} at most`, holds: 'artifacts', cause: error });
    }
    zipped.set(artifactName, { path: result.path, bytes: result.bytes });
  }

  const layerOutputs = new Map<string, LayerOutput>();
  const builtByTarget = new Map<string, BuiltLayers>();
  const outputs: FunctionOutput[] = [];
  for (const fn of functions) {
    const target = targetPlatform(fn.runtime, fn.architecture);
    const id = targetId(target);
    const tree = trees.get(id)!;
    const contents = contentsByArtifact.get(fn.artifactName)!;
    const largestFunction = Math.max(
      ...functions.filter((other) => targetId(targetPlatform(other.runtime, other.architecture)) === id).map((other) => contentsByArtifact.get(other.artifactName)!.unzippedBytes),
    );
    let built = builtByTarget.get(id);
    if (!built) {
      try {
        built = await buildLayers({ tree, functionBytes: largestFunction, cache, reporter });
      } catch (error) {
        // The layer plan knows the dependencies; say which function left them too little room.
        if (!(error instanceof TorchError) || error.code !== 'TORCH_PACKAGE_TOO_LARGE') throw error;
        const largest = functions.find((other) => contentsByArtifact.get(other.artifactName)!.unzippedBytes === largestFunction)!;
        throw new TorchError(
          error.code,
          `Function "${largest.name}" has a ${formatBytes(largestFunction)} package of its own (model ${packagedModel.manifest.path} ` +
            `${formatBytes(contentsByArtifact.get(largest.artifactName)!.modelBytes)}), which leaves torch too little room. ${error.message}`,
          { cause: error },
        );
      }
      builtByTarget.set(id, built);
      // The layers are the big writes into .serverless/: their sizes are known, so check the room first.
      const layerBytes = built.layers.reduce((sum, layer) => sum + layer.bytes, 0);
      const free = freeBytes(outputDir);
      if (free !== null && free < layerBytes) {
        throw diskFullError({
          dir: outputDir,
          step: `copying the layers of ${target.runtime} ${target.architecture}`,
          neededBytes: layerBytes,
          neededFor: `${built.layers.length} layer zips`,
          holds: 'artifacts',
        });
      }
      for (const layer of built.layers) {
        const name = layerName(target, layer.role);
        const artifact = path.join(outputDir, `${name}.zip`);
        fs.copyFileSync(layer.path, artifact);
        layerOutputs.set(name, {
          name,
          artifact,
          runtime: target.runtime,
          architecture: target.architecture,
          description: `${layer.role === 'deps' ? 'Dependencies' : 'Compressed dependencies'} of torch ${tree.torch.version} for ${target.runtime} ${target.architecture} (serverless-torch)`,
          bytes: layer.bytes,
          unzippedBytes: layer.unzippedBytes,
        });
        reporter.verbose(
          `Layer ${name}: ${layer.role === 'deps' ? `${built.uncompressedBytes} bytes of files under /opt/python` : `archive of ${built.compressedBytes} bytes unpacked to /tmp at cold start${built.libraries.length ? `, preloading ${built.libraries.join(', ')}` : ''}`}`,
        );
      }
    }
    const ourLayers = built.layers.map((layer) => layerName(target, layer.role));
    checkLayerCount(fn, ourLayers.length);
    const layerUnzipped = built.layers.reduce((sum, layer) => sum + layer.unzippedBytes, 0);
    const totalUnzipped = contents.unzippedBytes + layerUnzipped;
    if (totalUnzipped > UNZIPPED_LIMIT) {
      throw new TorchError(
        'TORCH_PACKAGE_TOO_LARGE',
        `Function "${fn.name}" comes to ${totalUnzipped} bytes unzipped with its layers, over Lambda's ${UNZIPPED_LIMIT}: ` +
          `its own package is ${contents.unzippedBytes} bytes (model ${contents.modelBytes}). Make the function package smaller ` +
          '(package.patterns), shrink the model, or deploy a container image.',
      );
    }
    let ephemeralStorageSize = fn.ephemeralStorageSize;
    const needed = ephemeralStorageNeeded(built.tmpBytes);
    if (fn.snapStart) {
      checkSnapStart({ functionName: fn.name, target, tmpMbNeeded: needed, ephemeralStorageSize: fn.ephemeralStorageSize, tmpBytes: built.tmpBytes });
    } else {
      const warning = initBudgetWarning({
        functionName: fn.name,
        memorySize: fn.memorySize,
        tmpBytes: built.tmpBytes,
        modelBytes: contents.modelBytes,
        bytecode: Boolean(tree.bytecode),
      });
      if (warning) reporter.warning(warning);
    }
    if (needed > (fn.ephemeralStorageSize ?? DEFAULT_TMP_MB)) {
      reporter.notice(`Function "${fn.name}": /tmp set to ${needed} MB (ephemeralStorageSize): the compressed dependencies unpack to ${Math.ceil(built.tmpBytes / 1048576)} MiB there at cold start.`);
      ephemeralStorageSize = needed;
    }
    const zip = zipped.get(fn.artifactName)!;
    outputs.push({
      name: fn.name,
      artifact: zip.path,
      handler: SHIM_HANDLER,
      environment: { [HANDLER_ENV]: fn.handler },
      layers: ourLayers,
      ephemeralStorageSize,
      report: {
        functionName: fn.name,
        target: `${target.runtime} ${target.architecture}`,
        torch: tree.torch,
        code: { unzippedBytes: contents.unzippedBytes, zippedBytes: zip.bytes },
        model: { bytes: contents.modelBytes, loader: packagedModel.manifest.loader },
        quantization: quantization ? { ...quantization, engine: engineFor(quantization, target.architecture) } : null,
        layers: built.layers.map((layer) => ({ name: layerName(target, layer.role), role: layer.role, unzippedBytes: layer.unzippedBytes, zippedBytes: layer.bytes })),
        totalUnzippedBytes: totalUnzipped,
        tmpBytes: built.tmpBytes,
        ephemeralStorageSize: ephemeralStorageSize ?? DEFAULT_TMP_MB,
      },
    });
  }
  return { functions: outputs, layers: [...layerOutputs.values()], trees: [...trees.values()] };
}
