import * as fs from 'node:fs';
import * as path from 'node:path';
import { ResolvedConfig } from '../config/options';
import { TorchError } from '../util/errors';
import { sha256File } from '../util/hash';
import { Runner } from '../util/process';
import { QUIET_ARGS, indexArgs, pipForTarget, targetArgs } from './pip-args';
import { knownPipFailure, pipFailure, requirementsProblem } from './pip-failure';
import { TargetPlatform } from './target';
import { TorchWheel } from './torch-wheel';

/** Installs the requirements, with torch pinned to the given wheel file, into `treeDir`. */
export async function installTree(options: {
  config: ResolvedConfig;
  target: TargetPlatform;
  torchWheel: TorchWheel;
  otherLines: string[];
  /** Constraint lines (-c files, torch taken out). @default none */
  constraintLines?: string[];
  usesHashes: boolean;
  /** The user's sha256 pins for torch: the chosen wheel must match one. @default none */
  torchHashes?: string[];
  /** Wheel files installed with the requirements (the zstd decoder), already checked against their index. @default none */
  extraWheels?: string[];
  treeDir: string;
  workDir: string;
  configuredExtras: string[];
  runner: Runner;
  onLine?: (line: string) => void;
}): Promise<void> {
  const { config, target, torchWheel, treeDir, workDir, runner } = options;
  const torchLine = options.usesHashes ? `${torchWheel.path} --hash=sha256:${await checkTorchPins(options)}` : torchWheel.path;
  // In hash-checking mode every line needs a hash: pip verified these files against their index when it downloaded them.
  const extraLines = await Promise.all((options.extraWheels ?? []).map(async (wheel) => (options.usesHashes ? `${wheel} --hash=sha256:${await sha256File(wheel)}` : wheel)));
  // The user's files are never edited: pip reads copies with torch replaced by the chosen wheel
  // (and taken out of the constraints, which the wheel's own version might not match textually).
  const requirementsCopy = path.join(workDir, 'requirements.txt');
  const constraints = options.constraintLines ?? [];
  const constraintsCopy = path.join(workDir, 'constraints.txt');
  if (constraints.length) fs.writeFileSync(constraintsCopy, constraints.join('\n') + '\n');
  fs.writeFileSync(requirementsCopy, [...options.otherLines, ...(constraints.length ? [`-c ${constraintsCopy}`] : []), torchLine, ...extraLines].join('\n') + '\n');
  const result = await runner(
    config.python,
    pipForTarget(target, [
      'install',
      ...QUIET_ARGS,
      '--no-compile',
      '--no-warn-script-location',
      '--target',
      treeDir,
      ...targetArgs(target),
      ...indexArgs(config, options.configuredExtras),
      '-r',
      requirementsCopy,
    ]),
    { onLine: options.onLine },
  );
  if (result.code !== 0) throw installFailure(config, target, result.stdout, result.stderr, treeDir);
  for (const wheel of [torchWheel.path, ...(options.extraWheels ?? [])]) forgetWheelPath(treeDir, path.basename(wheel));
}

/**
 * The sha256 of the chosen torch wheel, checked against the torch line's --hash pins: pip never
 * sees the user's torch line, so its pins are checked here, where pip would have.
 */
async function checkTorchPins(options: { config: ResolvedConfig; target: TargetPlatform; torchWheel: TorchWheel; torchHashes?: string[] }): Promise<string> {
  const { config, target, torchWheel } = options;
  const digest = await sha256File(torchWheel.path);
  const pins = options.torchHashes ?? [];
  if (pins.length && !pins.includes(digest)) {
    throw new TorchError(
      'TORCH_WHEEL_HASH_MISMATCH',
      `${torchWheel.name.filename} from ${config.torchIndexUrl} has sha256 ${digest}, but ` +
        `${config.requirementsPath ? path.basename(config.requirementsPath) : 'the requirements'} pins torch to sha256 ` +
        `${pins.join(' or ')}. The index served other bytes than you pinned, or the pin is for another wheel: pin the hash ` +
        `of the ${target.runtime} ${target.architecture} wheel (a torch line may carry one --hash per wheel), or fix the index.`,
    );
  }
  return digest;
}

/** Why pip could not install the requirements, in the user's terms. */
function installFailure(config: ResolvedConfig, target: TargetPlatform, stdout: string, stderr: string, treeDir: string): TorchError {
  const output = `${stdout}\n${stderr}`;
  const index = config.indexUrl ?? "pip's configured index";
  const known = knownPipFailure('install the requirements', index, output, treeDir) ?? requirementsProblem(output, config.requirementsPath);
  if (known) return known;
  const missing = /No matching distribution found for ([^\s]+)/.exec(stderr);
  if (missing) {
    return new TorchError(
      'TORCH_REQUIREMENT_NOT_FOUND',
      `pip found no wheel of ${missing[1]} for ${target.runtime} ${target.architecture} ` +
        `(${target.platformTags[0]}, ${target.abi}). Lambda needs binary wheels built for its platform: ` +
        'pick a version that publishes one, or drop the requirement.',
    );
  }
  return pipFailure('install the requirements', index, output, treeDir);
}

/**
 * pip records a wheel installed from a file in <dist-info>/direct_url.json (PEP 610), here the
 * path of this run's work directory. That path differs on every cold build, so it would make the
 * layers differ too and be uploaded again. The wheel came from an index, as an index install
 * records nothing, so the file and its RECORD line go.
 */
function forgetWheelPath(treeDir: string, wheelFile: string): void {
  const project = wheelFile.split('-')[0];
  const distInfo = fs.readdirSync(treeDir).find((name) => name.startsWith(`${project}-`) && name.endsWith('.dist-info'));
  if (!distInfo) return;
  const directUrl = path.join(treeDir, distInfo, 'direct_url.json');
  let url = '';
  try {
    url = String(JSON.parse(fs.readFileSync(directUrl, 'utf8')).url);
  } catch {
    return;
  }
  if (!url.startsWith('file://') || !decodeURIComponent(url).endsWith(`/${wheelFile}`)) return;
  fs.rmSync(directUrl);
  const record = path.join(treeDir, distInfo, 'RECORD');
  if (fs.existsSync(record)) {
    const lines = fs.readFileSync(record, 'utf8').split('\n');
    fs.writeFileSync(record, lines.filter((line) => !line.startsWith(`${distInfo}/direct_url.json,`)).join('\n'));
  }
}
