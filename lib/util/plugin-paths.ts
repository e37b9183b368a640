import * as fs from 'node:fs';
import * as path from 'node:path';

function findPackageJson(): string {
  for (let dir = __dirname; ; dir = path.dirname(dir)) {
    const candidate = path.join(dir, 'package.json');
    if (fs.existsSync(candidate)) return candidate;
    if (path.dirname(dir) === dir) throw new Error('package.json of serverless-torch not found');
  }
}

const packageRoot = path.dirname(findPackageJson());

export const PLUGIN_VERSION: string = JSON.parse(fs.readFileSync(path.join(packageRoot, 'package.json'), 'utf8')).version;

/** The Python package copied into every torch function: what runs in Lambda. */
export const SHIM_DIR = path.join(packageRoot, 'python', 'runtime', 'serverless_torch');

/** Python that runs only on the build machine for `invoke local`; never copied into a function. */
export const LOCAL_SCRIPTS_DIR = path.join(packageRoot, 'python', 'local');

/** Python scripts the plugin runs on the build machine; never copied into a function. */
export const BUILD_SCRIPTS_DIR = path.join(packageRoot, 'python', 'build');
