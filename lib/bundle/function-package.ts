import * as fs from 'node:fs';
import * as path from 'node:path';
import { TorchError } from '../util/errors';
import { matcher } from '../util/glob';
import { ModelManifest } from '../model/inspect';
import { Reporter } from '../util/reporter';
import { SHIM_DIR } from '../util/plugin-paths';
import { ZipEntry, ZipResult, writeZip } from '../zip/write';

export const SHIM_PACKAGE = 'serverless_torch';
export const SHIM_HANDLER = 'serverless_torch.shim.handler';
export const HANDLER_ENV = 'SERVERLESS_TORCH_HANDLER';

/** The function's files: the user's code as the framework selected it, the shim and the model. */
export interface FunctionContents {
  entries: ZipEntry[];
  unzippedBytes: number;
  modelBytes: number;
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

/** Every handler's module must be in the package; a module that does not seem to define the function gets a warning. */
function checkHandlers(serviceDir: string, files: Set<string>, handlers: { functionName: string; handler: string }[], reporter: Reporter): void {
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
    if (!new RegExp(`^(async\\s+)?def\\s+${handlerFunction}\\s*\\(|^${handlerFunction}\\s*=`, 'm').test(source)) {
      reporter.warning(`Function "${functionName}": ${moduleFile} does not seem to define ${handlerFunction}() (handler "${handler}").`);
    }
  }
}

function checkFactory(files: Set<string>, factory: string | null): void {
  if (!factory) return;
  const modulePath = factory.split(':')[0].replace(/\./g, '/');
  if (moduleFileIn(files, modulePath)) return;
  throw new TorchError(
    'TORCH_MODEL_FACTORY_NOT_FOUND',
    `custom.torch.model.factory is "${factory}", but ${modulePath}.py is not in the function package. ` +
      'Name a module of your service ("module:function") and make sure package.patterns include it.',
  );
}

/** The shim package: its Python files and the manifest it loads the model by. */
function shimEntries(model: ModelManifest): ZipEntry[] {
  const entries: ZipEntry[] = shimFiles().map((name) => ({ name: `${SHIM_PACKAGE}/${name}`, source: { path: path.join(SHIM_DIR, name) } }));
  const manifest = {
    format: 1,
    model: { path: model.path, loader: model.loader, factory: model.factory, sha256: model.sha256, ...(model.quantized ? { quantized: model.quantized } : {}) },
  };
  entries.push({ name: `${SHIM_PACKAGE}/manifest.json`, source: { data: Buffer.from(JSON.stringify(manifest, null, 1)) } });
  return entries;
}

export function collectFunctionContents(options: {
  serviceDir: string;
  /** Paths relative to the service directory, as the framework's packager resolved them. */
  files: string[];
  model: ModelManifest;
  /** The file shipped at model.path when it is not the service's own (a quantized model). */
  modelSource?: string;
  handlers: { functionName: string; handler: string }[];
  reporter: Reporter;
}): FunctionContents {
  const { serviceDir, model, reporter } = options;
  const kept = userFiles(options.files, reporter);
  const fileSet = new Set(kept);
  checkHandlers(serviceDir, fileSet, options.handlers, reporter);
  checkFactory(fileSet, model.factory);
  if (!fileSet.has(model.path)) {
    reporter.verbose(`Function package: adding the model ${model.path}, which package.patterns left out`);
    kept.push(model.path);
  }
  const entries: ZipEntry[] = kept.map((file) => {
    const absolute = file === model.path && options.modelSource ? options.modelSource : path.join(serviceDir, file);
    return { name: file, source: { path: absolute }, executable: (fs.statSync(absolute).mode & 0o111) !== 0 };
  });
  entries.push(...shimEntries(model));
  const unzippedBytes = entries.reduce(
    (sum, entry) => sum + ('data' in entry.source ? entry.source.data.length : fs.statSync(entry.source.path).size),
    0,
  );
  return { entries, unzippedBytes, modelBytes: model.bytes };
}

export function writeFunctionPackage(dest: string, contents: FunctionContents): Promise<ZipResult> {
  return writeZip(dest, contents.entries);
}
