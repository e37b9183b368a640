import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { bytecodeSeeds, compileEagerBytecode, findBytecodeCompiler } from '../../../lib/shrink/bytecode';
import { runProcess } from '../../../lib/util/process';
import { targetPlatform } from '../../../lib/resolve/target';

function writeTree(root: string, files: Record<string, string>): void {
  for (const [name, text] of Object.entries(files)) {
    fs.mkdirSync(path.dirname(path.join(root, name)), { recursive: true });
    fs.writeFileSync(path.join(root, name), text);
  }
}

// A package whose import runs some modules and leaves others for later.
const TREE = {
  'torch/__init__.py': 'import os\nfrom . import eager\nfrom .sub import inner\nif TYPE_CHECKING:\n    from . import typing_only\ntry:\n    import torch.fallback\nexcept ImportError:\n    pass\n\ndef later():\n    from . import lazy\n\nclass Holder:\n    from . import in_class\n',
  'torch/eager.py': 'from .deep import x\n',
  'torch/deep.py': 'x = 1\n',
  'torch/sub/__init__.py': '',
  'torch/sub/inner.py': 'from .. import relative_up\n',
  'torch/relative_up.py': '',
  'torch/fallback.py': '',
  'torch/in_class.py': '',
  'torch/lazy.py': '',
  'torch/typing_only.py': '',
  'torch/py312_only.py': 'def f[T](x: T) -> T:\n    return x\n',
  'sympy/__init__.py': 'from . import core\n',
  'sympy/core.py': '',
};

function pycFiles(root: string): string[] {
  const found: string[] = [];
  const walk = (dir: string) => {
    for (const entry of fs.readdirSync(dir, { withFileTypes: true })) {
      const full = path.join(dir, entry.name);
      if (entry.isDirectory()) walk(full);
      else if (entry.name.endsWith('.pyc')) found.push(path.relative(root, full).split(path.sep).join('/'));
    }
  };
  walk(root);
  return found.sort();
}

describe('bytecode for the modules a cold start imports', function () {
  this.timeout(60_000);
  let root: string;
  beforeEach(() => {
    root = fs.mkdtempSync(path.join(os.tmpdir(), 'bytecode-test-'));
  });
  afterEach(() => fs.rmSync(root, { recursive: true, force: true }));

  it('seeds torch and the top-level modules of the requirements the user named', () => {
    writeTree(root, {
      'PyYAML-6.0.dist-info/top_level.txt': '_yaml\nyaml\n',
      'typing_extensions-4.0.dist-info/METADATA': '',
      'sympy-1.14.0.dist-info/top_level.txt': 'isympy\nsympy\n',
    });
    assert.deepEqual(bytecodeSeeds(root, ['pyyaml>=6', 'typing-extensions', '--extra-index-url x']), ['_yaml', 'torch', 'typing_extensions', 'yaml']);
  });

  it('compiles what importing torch runs, for this Python, and nothing that waits for a call', async () => {
    const compiler = await findBytecodeCompiler(targetPlatform('python3.11', 'x86_64'), runProcess);
    assert.ok(compiler, 'the machine has python3.11');
    writeTree(root, TREE);
    const result = await compileEagerBytecode({ treeDir: root, seeds: ['torch'], compiler, runner: runProcess });
    const tag = 'cpython-311';
    assert.deepEqual(
      pycFiles(root),
      ['__init__', 'deep', 'eager', 'fallback', 'in_class', 'relative_up'].map((name) => `torch/__pycache__/${name}.${tag}.pyc`)
        .concat([`torch/sub/__pycache__/__init__.${tag}.pyc`, `torch/sub/__pycache__/inner.${tag}.pyc`])
        .sort(),
    );
    assert.equal(result.compiled, 8);
    assert.deepEqual(result.failed, []);
  });

  it('writes unchecked-hash bytecode that does not depend on where the tree was built', async () => {
    const compiler = (await findBytecodeCompiler(targetPlatform('python3.11', 'x86_64'), runProcess))!;
    const digests: string[] = [];
    for (const dir of ['one', 'two']) {
      writeTree(path.join(root, dir), TREE);
      await compileEagerBytecode({ treeDir: path.join(root, dir), seeds: ['torch'], compiler, runner: runProcess });
      const pyc = fs.readFileSync(path.join(root, dir, 'torch', '__pycache__', '__init__.cpython-311.pyc'));
      // PEP 552 flags: bit 0 hash-based, bit 1 check_source; unchecked-hash is 0b01.
      assert.equal(pyc.readUInt32LE(4), 0b01);
      digests.push(createHash('sha256').update(pyc).digest('hex'));
    }
    assert.equal(digests[0], digests[1]);
  });

  it('leaves sources another Python version needs without bytecode, and says which', async () => {
    const compiler = (await findBytecodeCompiler(targetPlatform('python3.11', 'x86_64'), runProcess))!;
    writeTree(root, { 'torch/__init__.py': 'from . import py312_only\n', 'torch/py312_only.py': TREE['torch/py312_only.py'] });
    const result = await compileEagerBytecode({ treeDir: root, seeds: ['torch'], compiler, runner: runProcess });
    assert.deepEqual(result.failed, ['torch/py312_only.py']);
    assert.equal(result.compiled, 1);
  });

  it('finds no compiler for a Python version the machine lacks', async () => {
    assert.equal(await findBytecodeCompiler({ ...targetPlatform('python3.11', 'x86_64'), pythonVersion: '3.99' }, runProcess), null);
  });
});
