import { ResolvedConfig } from '../config/options';
import { HostPackage, ensureHostPackage, hostPythonArgs as hostArgs } from '../resolve/host-package';
import { CacheLayout } from '../util/cache';
import { Runner } from '../util/process';
import { Reporter } from '../util/reporter';

/** A torch the build machine's interpreter can import, for work done at package time. */
export interface HostTorch extends HostPackage {
  /** The torch version it imports, as the dist-info names it ("2.13.0+cpu"). */
  torchVersion: string;
}

/**
 * A host copy of exactly the torch version the functions run: the build machine's own torch when
 * it is that version, otherwise a host-platform wheel from the torch index alone (so a CUDA build
 * elsewhere is never picked), installed once into the cache.
 */
export async function ensureHostTorch(options: {
  config: ResolvedConfig;
  torchVersion: string;
  cache: CacheLayout;
  runner: Runner;
  reporter: Reporter;
}): Promise<HostTorch> {
  const { config, torchVersion, cache, runner, reporter } = options;
  const host = await ensureHostPackage({
    config,
    request: { project: 'torch', version: torchVersion, projectIndex: config.torchIndexUrl, purpose: 'quantize: dynamic' },
    cache,
    runner,
    reporter,
  });
  return { ...host, torchVersion: host.version };
}

/** Interpreter arguments that import the host torch and nothing else from the machine's site-packages. */
export function hostPythonArgs(host: HostTorch): string[] {
  return hostArgs(host);
}
