import * as fs from 'node:fs';
import * as path from 'node:path';
import { TorchError } from '../util/errors';
import { matcher } from '../util/glob';
import { ModelManifest, PackagedModel } from '../model/inspect';
import { HandlerForm, handlerForm } from './handler-form';
import { Reporter } from '../util/reporter';
import { SHIM_DIR } from '../util/plugin-paths';
import { ZipEntry, ZipResult, writeZip } from '../zip/write';

export const SHIM_PACKAGE = 'serverless_torch';
export const SHIM_HANDLER = 'serverless_torch.shim.handler';
export const HANDLER_ENV = 'SERVERLESS_TORCH_HANDLER';
/** The id (in manifest.json "models") of the function's model; absent for a function with none. */
export const MODEL_ENV = 'SERVERLESS_TORCH_MODEL';
/** The deployment bucket a function whose model travels in S3 reads it from (python/runtime/serverless_torch/remote.py). */
export const MODEL_BUCKET_ENV = 'SERVERLESS_TORCH_MODEL_BUCKET';
/** What the shim reads; it refuses any other. */
export const MANIFEST_FORMAT = 2;

/** The zip's files: the user's code as the framework selected it, the shim, and the models of the functions it serves. */
export interface FunctionContents {
  entries: ZipEntry[];
  unzippedBytes: number;
  /** Bytes of all the models in the zip, each once. */
  modelBytes: number;
  /** How the shim calls each function's handler, by function name. */
  handlerForms: Record<string, HandlerForm>;
}

// A Python function never imports node_modules, and bytecode from the build machine's Python is
// dead weight for another runtime's interpreter.
const NEVER_SHIPPED = matcher(['node_modules/**', '**/__pycache__/**', '*.pyc']);

export function shimFiles(): string[] {
  return fs.readdirSync(SHIM_DIR).filter((name) => name.endsWith('.py')).sort();
}

/** Module path and function of a handler string ("src/app.predict" → src/app, predict). */
export function splitHandler(handler: string): { module: string; functionName: string } {
  const dot = handler.lastIndexOf('.');
  return { module: handler.slice(0, dot).replace(/\./g, '/'), functionName: handler.slice(dot + 1) };
}

function moduleFileIn(files: Set<string>, modulePath: string): string | null {
  for (const candidate of [`${modulePath}.py`, `${modulePath}/__init__.py`]) if (files.has(candidate)) return candidate;
  return null;
}

/** The user's files as the framework selected them, less what never ships; refuses a file in the shim's package. */
function userFiles(selected: string[], reporter: Reporter): string[] {
  const files = selected.map((file) => file.split(path.sep).join('/'));
  const conflict = files.find((file) => file.startsWith(`${SHIM_PACKAGE}/`));
  if (conflict) {
    throw new TorchError(
      'TORCH_SHIM_NAME_TAKEN',
      `Your service has ${conflict}, but "${SHIM_PACKAGE}" is the package serverless-torch adds to the function. ` +
        'Rename your package or exclude it with package.patterns.',
    );
  }
  const kept = files.filter((file) => !NEVER_SHIPPED(file));
  const skipped = files.length - kept.length;
  if (skipped) reporter.verbose(`Function package: left out ${skipped} files under node_modules/ or __pycache__/`);
  return kept;
}

/** Every handler's module must be in the package, with a function that takes the event and the context. */
function checkHandlers(serviceDir: string, files: Set<string>, handlers: { functionName: string; handler: string }[], reporter: Reporter): Record<string, HandlerForm> {
  const forms: Record<string, HandlerForm> = {};
  for (const { functionName, handler } of handlers) {
    const { module, functionName: handlerFunction } = splitHandler(handler);
    const moduleFile = moduleFileIn(files, module);
    if (!moduleFile) {
      throw new TorchError(
        'TORCH_HANDLER_NOT_FOUND',
        `Function "${functionName}" has handler "${handler}", but ${module}.py is not in the package. ` +
          'Check the handler path (relative to the service directory) and package.patterns.',
      );
    }
    const source = fs.readFileSync(path.join(serviceDir, moduleFile), 'utf8');
    forms[functionName] = handlerForm(source, handlerFunction, { function: functionName, handler });
    if (forms[functionName] === 'unknown' && !new RegExp(`^${handlerFunction}\\s*=`, 'm').test(source)) {
      reporter.warning(`Function "${functionName}": ${moduleFile} does not seem to define ${handlerFunction}() (handler "${handler}").`);
    }
  }
  return forms;
}

/** A "module:function" the shim imports from the package (a factory, a custom load function) must be there. */
function checkUserFunction(files: Set<string>, serviceDir: string, reference: string | null | undefined, option: string): void {
  if (!reference) return;
  const [module, name] = reference.split(':');
  const modulePath = module.replace(/\./g, '/');
  const file = moduleFileIn(files, modulePath);
  if (!file) {
    throw new TorchError(
      'TORCH_MODEL_FACTORY_NOT_FOUND',
      `${option} is "${reference}", but ${modulePath}.py is not in the function package. ` +
        'Name a module of your service ("module:function") and make sure package.patterns include it.',
    );
  }
  const top = name.split('.')[0];
  const defines = new RegExp(`^(?:async\\s+)?def\\s+${top}\\s*\\(|^${top}\\s*=|^class\\s+${top}\\b|^from\\s.*\\bimport\\b.*\\b${top}\\b|^import\\s.*\\b${top}\\b`, 'm');
  if (!defines.test(fs.readFileSync(path.join(serviceDir, file), 'utf8'))) {
    throw new TorchError('TORCH_MODEL_FACTORY_NOT_FOUND', `${option} is "${reference}", but ${file} defines no ${top}. Check the name after the colon.`);
  }
}

/** The files a model ships as: one file, or every file of its directory, at their package paths. */
function modelEntries(model: PackagedModel): { name: string; source: string }[] {
  const { manifest, source } = model;
  if (model.inS3) return [];
  if (manifest.kind === 'file') return [{ name: manifest.path, source }];
  return Object.keys(manifest.files ?? {}).map((file) => ({ name: `${manifest.path}/${file}`, source: path.join(source, ...file.split('/')) }));
}

/** The manifest entry of a model as the shim reads it (README "Runtime layout"). */
function manifestEntry(model: ModelManifest): Record<string, unknown> {
  const { id: _id, bytes: _bytes, className, ...rest } = model;
  return { ...rest, ...(className ? { class: className } : {}) };
}

/** The shim package: its Python files and the manifest it loads the models by. */
function shimEntries(models: PackagedModel[]): ZipEntry[] {
  const entries: ZipEntry[] = shimFiles().map((name) => ({ name: `${SHIM_PACKAGE}/${name}`, source: { path: path.join(SHIM_DIR, name) } }));
  const manifest = { format: MANIFEST_FORMAT, models: Object.fromEntries(models.map((model) => [model.manifest.id, manifestEntry(model.manifest)])) };
  entries.push({ name: `${SHIM_PACKAGE}/manifest.json`, source: { data: Buffer.from(JSON.stringify(manifest, null, 1)) } });
  return entries;
}

/**
 * The zip of one artifact: the user's files, every model of the functions it serves (each once,
 * at its path: functions sharing a model share its bytes), and the shim with its manifest.
 */
export function collectFunctionContents(options: {
  serviceDir: string;
  /** Paths relative to the service directory, as the framework's packager resolved them. */
  files: string[];
  models: PackagedModel[];
  handlers: { functionName: string; handler: string }[];
  reporter: Reporter;
}): FunctionContents {
  const { serviceDir, models, reporter } = options;
  const kept = userFiles(options.files, reporter);
  const fileSet = new Set(kept);
  const handlerForms = checkHandlers(serviceDir, fileSet, options.handlers, reporter);
  const sources = new Map(kept.map((file) => [file, path.join(serviceDir, file)]));
  for (const model of models) {
    if (model.inS3) {
      // The framework selected the model's files with the service's: in S3, they stay out of the zip.
      for (const name of [...sources.keys()]) if (name === model.manifest.path || name.startsWith(`${model.manifest.path}/`)) sources.delete(name);
    }
    checkUserFunction(fileSet, serviceDir, model.manifest.factory, `the factory of ${model.manifest.path}`);
    checkUserFunction(fileSet, serviceDir, model.manifest.load, `the load function of ${model.manifest.path}`);
    const shipped = modelEntries(model);
    if (shipped.some((entry) => !fileSet.has(entry.name))) {
      reporter.verbose(`Function package: adding the model ${model.manifest.path}, which package.patterns left out`);
    }
    // The model's own bytes win over what the framework selected at the same path (a quantized copy).
    for (const entry of shipped) sources.set(entry.name, entry.source);
  }
  const entries: ZipEntry[] = [...sources.entries()].map(([name, source]) => ({ name, source: { path: source }, executable: (fs.statSync(source).mode & 0o111) !== 0 }));
  entries.push(...shimEntries(models));
  const unzippedBytes = entries.reduce(
    (sum, entry) => sum + ('data' in entry.source ? entry.source.data.length : fs.statSync(entry.source.path).size),
    0,
  );
  const packagedModels = models.filter((model) => !model.inS3);
  return { entries, unzippedBytes, modelBytes: packagedModels.reduce((sum, model) => sum + model.manifest.bytes, 0), handlerForms };
}

export function writeFunctionPackage(dest: string, contents: FunctionContents): Promise<ZipResult> {
  return writeZip(dest, contents.entries);
}
