import * as fs from 'node:fs';
import * as path from 'node:path';
import { isTorchError } from '../util/errors';
import { Interpreter, findInterpreter } from '../resolve/interpreter';
import { Runner } from '../util/process';
import { TargetPlatform } from '../resolve/target';
import { BUILD_SCRIPTS_DIR } from '../util/plugin-paths';

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

function normalise(name: string): string {
  return name.toLowerCase().replace(/[-_.]+/g, '-');
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
      .map(normalise),
  );
  const seeds = new Set(['torch']);
  for (const entry of fs.readdirSync(treeDir)) {
    const match = /^(.+?)-[^-]+\.dist-info$/.exec(entry);
    if (!match || !wanted.has(normalise(match[1]))) continue;
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
