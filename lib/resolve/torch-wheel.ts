import * as fs from 'node:fs';
import * as path from 'node:path';
import { ResolvedConfig } from '../config/options';
import { TorchError } from '../util/errors';
import { Runner } from '../util/process';
import { explainNoTorchWheel, indexPageError, readIndexPage } from './index-page';
import { QUIET_ARGS, pipForTarget, targetArgs } from './pip-args';
import { knownPipFailure, pipFailure } from './pip-failure';
import { TargetPlatform } from './target';
import { WheelName, parseWheelName } from './wheel-name';

export interface TorchWheel {
  path: string;
  name: WheelName;
}

/**
 * Fetches the torch wheel for the target from the torch index alone, so that the CUDA build
 * on another index can never be picked, and so that a refusal can be explained precisely.
 */
export async function downloadTorchWheel(options: {
  config: ResolvedConfig;
  target: TargetPlatform;
  torchSpecifier: string;
  workDir: string;
  runner: Runner;
  onLine?: (line: string) => void;
}): Promise<TorchWheel> {
  const { config, target, torchSpecifier, workDir, runner } = options;
  const downloadDir = path.join(workDir, 'torch-wheel');
  fs.mkdirSync(downloadDir, { recursive: true });
  const result = await runner(
    config.python,
    pipForTarget(target, [
      'download',
      ...QUIET_ARGS,
      '--no-deps',
      ...targetArgs(target),
      '--index-url',
      config.torchIndexUrl,
      '--dest',
      downloadDir,
      `torch${torchSpecifier}`,
    ]),
    { onLine: options.onLine },
  );
  if (result.code !== 0) {
    // pip logs fetch problems at info level (stdout) and errors on stderr: read both.
    const output = `${result.stdout}\n${result.stderr}`;
    const known = knownPipFailure('download torch', config.torchIndexUrl, output, downloadDir);
    if (known) throw known;
    // pip says little about a broken index (no versions, or a traceback): read its page to say why.
    const page = await readIndexPage(config.torchIndexUrl, 'torch');
    if (page.problem) throw indexPageError(config.torchIndexUrl, 'custom.torch.torchIndexUrl', page);
    if (/No matching distribution|Could not find a version/.test(output)) {
      throw explainNoTorchWheel(config.torchIndexUrl, target, torchSpecifier, page.wheels);
    }
    throw pipFailure('download torch', config.torchIndexUrl, output, downloadDir);
  }
  const files = fs.readdirSync(downloadDir).filter((file) => file.endsWith('.whl'));
  const wheel = files.map(parseWheelName).find((name) => name?.project === 'torch');
  if (!wheel) throw pipFailure('download torch', config.torchIndexUrl, result.stderr + result.stdout);
  if (/\+cu\d+|\+rocm/.test(wheel.version)) {
    throw new TorchError(
      'TORCH_CUDA_BUILD_SELECTED',
      `The torch index ${config.torchIndexUrl} served ${wheel.filename}, a GPU build: it cannot run on Lambda. ` +
        'Set custom.torch.torchIndexUrl to the CPU-only index https://download.pytorch.org/whl/cpu.',
    );
  }
  return { path: path.join(downloadDir, wheel.filename), name: wheel };
}
