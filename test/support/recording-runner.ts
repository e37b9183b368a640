/**
 * A Runner that records every command and plays pip without running anything: `pip download`
 * drops the wheel file asked for (torch or zstandard) into --dest, `pip install --target` lays
 * out a small torch-shaped tree, with zstandard when its wheel is among the requirements. Tools it
 * does not know (strip, interpreters of other versions) are "not installed".
 * For unit tests of the stages that run processes.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import { PIP_FOR_TARGET_SCRIPT } from '../../lib/resolve/pip-args';
import { RunResult, Runner } from '../../lib/util/process';

export interface RecordedCall {
  command: string;
  args: string[];
  /** What the requirements file given with -r held when pip read it (it lives in a work directory removed afterwards). */
  requirements?: string;
}

export interface RecordingRunner {
  runner: Runner;
  calls: RecordedCall[];
  /** The pip subcommands run so far ("download", "install", ...). */
  pipCommands(): string[];
}

/** Files `pip install` writes, relative to --target: torch's shape in miniature. */
export const INSTALLED_TREE: Record<string, string> = {
  'torch/__init__.py': 'import torch._C\n',
  'torch/_C.cpython-311-x86_64-linux-gnu.so': 'ELF extension module',
  'torch/lib/libtorch_cpu.so': 'ELF'.repeat(1000),
  'torch/test/test_ops.bin': 'C++ test binary',
  'torch/include/ATen/ATen.h': '#pragma once',
  'torch/bin/torch_shm_manager': 'ELF',
  'torch-2.13.0+cpu.dist-info/METADATA': 'Name: torch\nVersion: 2.13.0+cpu\n',
  'torch-2.13.0+cpu.dist-info/RECORD': 'torch/__init__.py,,\n',
  'sympy/__init__.py': '',
};

/** pip's own arguments, whether run as `-m pip` or through python/build/pip_for_target.py; null for anything else. */
export function pipArguments(args: string[]): string[] | null {
  if (args[0] === '-m' && args[1] === 'pip') return args.slice(2);
  if (args[0] === PIP_FOR_TARGET_SCRIPT) return args.slice(2);
  return null;
}
/** What the zstandard wheel installs, relative to --target. */
export const ZSTANDARD_TREE: Record<string, string> = {
  'zstandard/__init__.py': 'from .backend_c import *\n',
  'zstandard/backend_c.cpython-311-x86_64-linux-gnu.so': 'ELF extension module',
  'zstandard-0.25.0.dist-info/METADATA': 'Name: zstandard\nVersion: 0.25.0\n',
};
const ZSTANDARD_WHEEL = 'zstandard-0.25.0-cp311-cp311-manylinux2014_x86_64.manylinux_2_17_x86_64.whl';

const ok = (stdout = ''): RunResult => ({ code: 0, stdout, stderr: '' });

function notInstalled(command: string): never {
  throw Object.assign(new Error(`spawn ${command} ENOENT`), { code: 'ENOENT' });
}

export function recordingRunner(options: { installed?: Record<string, string>; zstandardOnIndex?: boolean } = {}): RecordingRunner {
  const calls: RecordedCall[] = [];
  const installed = options.installed ?? INSTALLED_TREE;
  const zstandardOnIndex = options.zstandardOnIndex ?? true;
  const runner: Runner = async (command, args) => {
    const requirementsFile = args.includes('-r') ? args[args.indexOf('-r') + 1] : null;
    calls.push({ command, args, ...(requirementsFile ? { requirements: fs.readFileSync(requirementsFile, 'utf8') } : {}) });
    const pip = pipArguments(args);
    if (!pip) return notInstalled(command);
    const sub = pip[0];
    const value = (flag: string) => pip[pip.indexOf(flag) + 1];
    if (sub === '--version') return ok('pip 23.2.1');
    if (sub === 'config') return ok('');
    if (sub === 'download') {
      const dest = value('--dest');
      const zstandard = args.at(-1) === 'zstandard';
      if (zstandard && !zstandardOnIndex) {
        return { code: 1, stdout: '', stderr: 'ERROR: Could not find a version that satisfies the requirement zstandard (from versions: none)\nERROR: No matching distribution found for zstandard' };
      }
      fs.mkdirSync(dest, { recursive: true });
      fs.writeFileSync(path.join(dest, zstandard ? ZSTANDARD_WHEEL : 'torch-2.13.0+cpu-cp311-cp311-manylinux_2_28_x86_64.whl'), 'wheel');
      return ok();
    }
    if (sub === 'install') {
      const target = value('--target');
      const withZstandard = (calls.at(-1)?.requirements ?? '').includes(ZSTANDARD_WHEEL);
      for (const [file, content] of Object.entries({ ...installed, ...(withZstandard ? ZSTANDARD_TREE : {}) })) {
        fs.mkdirSync(path.dirname(path.join(target, file)), { recursive: true });
        fs.writeFileSync(path.join(target, file), content);
      }
      return ok();
    }
    return { code: 2, stdout: '', stderr: `unknown pip command ${sub}` };
  };
  return {
    runner,
    calls,
    pipCommands: () => calls.map((call) => pipArguments(call.args)?.[0]).filter((sub): sub is string => sub !== undefined),
  };
}
