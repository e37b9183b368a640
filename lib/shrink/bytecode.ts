import * as fs from 'node:fs';
import * as path from 'node:path';
import { isTorchError } from '../util/errors';
import { Interpreter, findInterpreter } from '../resolve/interpreter';
import { Runner } from '../util/process';
import { TargetPlatform } from '../resolve/target';
import { BUILD_SCRIPTS_DIR } from '../util/plugin-paths';
import { formatBytes } from '../util/format';
import { normaliseProjectName } from '../util/project-name';
import { Reporter } from '../util/reporter';

export const BYTECODE_SCRIPT = path.join(BUILD_SCRIPTS_DIR, 'bytecode.py');
/** Part of the dependency tree's cache key: a change to what gets compiled, or how, changes this. */
export const BYTECODE_FORMAT = 1;

export interface BytecodeResult {
  /** Modules that got a .pyc. */
  compiled: number;
  bytes: number;
  /** Sources this Python cannot compile (written for a newer one); they have no .pyc. */
  failed: string[];
}

/**
 * A host interpreter of the runtime's minor version to compile bytecode with, or null. Bytecode
 * depends on the Python version only, so any machine's interpreter will do.
 */
export async function findBytecodeCompiler(target: TargetPlatform, runner: Runner): Promise<Interpreter | null> {
  try {
    return await findInterpreter(target, runner, undefined, { anyMachine: true });
  } catch (error) {
    if (isTorchError(error) && error.code === 'TORCH_NO_LOCAL_PYTHON') return null;
    throw error;
  }
}

/**
 * Modules a cold start imports first: torch (the shim imports it) and the top-level modules of
 * each requirement the user named (their handler imports those), from the dist-info's
 * top_level.txt, or the project name when a wheel has none.
 */
export function bytecodeSeeds(treeDir: string, requirementLines: string[]): string[] {
  const wanted = new Set(
    requirementLines
      .map((line) => /^\s*([A-Za-z0-9][A-Za-z0-9._-]*)/.exec(line)?.[1])
      .filter((name): name is string => Boolean(name))
      .map(normaliseProjectName),
  );
  const seeds = new Set(['torch']);
  for (const entry of fs.readdirSync(treeDir)) {
    const match = /^(.+?)-[^-]+\.dist-info$/.exec(entry);
    if (!match || !wanted.has(normaliseProjectName(match[1]))) continue;
    const topLevel = path.join(treeDir, entry, 'top_level.txt');
    const names = fs.existsSync(topLevel)
      ? fs.readFileSync(topLevel, 'utf8').split(/\r?\n/).map((line) => line.trim()).filter(Boolean)
      : [match[1].replace(/[-.]/g, '_')];
    for (const name of names) seeds.add(name.replace(/\//g, '.'));
  }
  return [...seeds].sort();
}

/**
 * Writes __pycache__/*.cpython-3X.pyc for the modules importing the seeds runs (python/build/bytecode.py
 * says why only those, and why unchecked-hash).
 */
export async function compileEagerBytecode(options: {
  treeDir: string;
  seeds: string[];
  compiler: Interpreter;
  runner: Runner;
}): Promise<BytecodeResult> {
  const { treeDir, seeds, compiler, runner } = options;
  const result = await runner(compiler.path, ['-I', '-S', BYTECODE_SCRIPT, treeDir, ...seeds]);
  const line = result.stdout.trim().split('\n').pop() ?? '';
  if (result.code !== 0 || !line.startsWith('{')) {
    throw new Error(`${compiler.path} ${BYTECODE_SCRIPT} failed (exit ${result.code}): ${result.stderr.trim().slice(-2000)}`);
  }
  return JSON.parse(line) as BytecodeResult;
}

/** What the tree record keeps of the bytecode step; null when no interpreter of the runtime's version was found. */
export type TreeBytecode = (BytecodeResult & { python: string }) | null;

/** Compiles the cold start's modules when `compiler` exists, and otherwise says what shipping source only costs. */
export async function compileTreeBytecode(options: {
  treeDir: string;
  target: TargetPlatform;
  requirementLines: string[];
  compiler: Interpreter | null;
  runner: Runner;
  reporter: Reporter;
}): Promise<TreeBytecode> {
  const { treeDir, target, compiler, runner, reporter } = options;
  if (!compiler) {
    reporter.notice(
      `No Python ${target.pythonVersion} on this machine to compile bytecode with: the dependencies ship as source only, ` +
        `so every cold start of a ${target.runtime} function compiles what it imports (about 2 s more for torch). ` +
        `Install it (e.g. "pyenv install ${target.pythonVersion}") or put python${target.pythonVersion} on PATH, and package again.`,
    );
    return null;
  }
  reporter.progress(`Compiling bytecode for Python ${target.pythonVersion}`);
  const result = await compileEagerBytecode({ treeDir, seeds: bytecodeSeeds(treeDir, options.requirementLines), compiler, runner });
  reporter.verbose(
    `bytecode (${compiler.path}, unchecked-hash): ${result.compiled} modules imported at cold start, ${formatBytes(result.bytes)}` +
      (result.failed.length ? `; not valid Python ${target.pythonVersion}, left as source: ${result.failed.join(', ')}` : ''),
  );
  return { ...result, python: compiler.path };
}
