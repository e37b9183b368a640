import * as path from 'node:path';
import { ResolvedConfig } from '../config/options';
import { QUIET_ARGS, checkPip, configuredExtraIndexUrls, indexArgs, pipForTarget, targetArgs } from '../resolve/pip-args';
import { pipFailure } from '../resolve/pip-failure';
import { targetPlatform } from '../resolve/target';
import { CacheLayout, cacheKey, memo } from '../util/cache';
import { Runner } from '../util/process';
import { Reporter } from '../util/reporter';

const SITE_DIR = 'site';

/**
 * boto3 for `invoke local --torch-model-from-s3`, as the Lambda runtime provides it in
 * /var/runtime (never shipped): installed once into the cache for the runtime's Python, from
 * the service's indexes.
 */
export async function runtimeBoto3(options: {
  config: ResolvedConfig;
  /** "3.11" */
  pythonVersion: string;
  cache: CacheLayout;
  runner: Runner;
  reporter: Reporter;
}): Promise<string> {
  const { config, pythonVersion, cache, runner, reporter } = options;
  // boto3 and its dependencies are pure Python: any machine's tags will do.
  const target = targetPlatform(`python${pythonVersion}`, process.arch === 'arm64' ? 'arm64' : 'x86_64');
  const configuredExtras = config.indexUrl ? [] : await configuredExtraIndexUrls(config.python, runner);
  const { entryDir } = await memo<{ python: string }>({
    cache,
    kind: 'runtime',
    key: cacheKey({ runtimeBoto3: 1, python: pythonVersion, indexes: [config.indexUrl, configuredExtras] }),
    recordFile: 'runtime-boto3.json',
    build: async (stageDir) => {
      await checkPip(config.python, runner);
      reporter.progress(`Installing boto3 for Python ${pythonVersion}, as the Lambda runtime provides it, for invoke local`);
      const args = ['install', ...QUIET_ARGS, '--no-compile', '--target', path.join(stageDir, SITE_DIR), ...targetArgs(target), ...indexArgs(config, configuredExtras), 'boto3'];
      const result = await runner(config.python, pipForTarget(target, args), { onLine: (line) => reporter.verbose(`pip: ${line}`) });
      if (result.code !== 0) throw pipFailure('install boto3 for invoke local', config.indexUrl ?? "pip's configured index", `${result.stdout}\n${result.stderr}`);
      return { python: pythonVersion };
    },
  });
  return path.join(entryDir, SITE_DIR);
}
