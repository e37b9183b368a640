import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { RequirementFiles, findRequirements, parseRequirements, readRequirements } from '../../../lib/config/requirements';
import { TorchError } from '../../../lib/util/errors';

/** Files in memory: text by absolute path, and what describe() says of local artifacts. */
function memoryFiles(texts: Record<string, string>, described: Record<string, unknown> = {}): RequirementFiles {
  return {
    read: (file) => {
      if (!(file in texts)) throw Object.assign(new Error(`ENOENT: no such file, open '${file}'`), { code: 'ENOENT' });
      return texts[file];
    },
    describe: (file) => described[file] ?? null,
  };
}

const code = (expected: string) => (error: unknown) => error instanceof TorchError && error.code === expected;

describe('requirements', () => {
  it('takes torch out and keeps every other line', () => {
    const parsed = parseRequirements('numpy==2.1.0\ntorch==2.13.0  # pinned\n\npillow\n', '/svc', null);
    assert.equal(parsed.torchSpecifier, '==2.13.0');
    assert.deepEqual(parsed.otherLines, ['numpy==2.1.0', 'pillow']);
    assert.equal(parsed.usesHashes, false);
  });

  it('does not mistake torchvision for torch', () => {
    const parsed = parseRequirements('torchvision==0.28.0\n', '/svc', null);
    assert.equal(parsed.torchSpecifier, '');
    assert.deepEqual(parsed.otherLines, ['torchvision==0.28.0']);
  });

  it('drops extras, markers and per-line options from the torch line', () => {
    const parsed = parseRequirements('torch[opt] >= 2.5 , < 2.14 ; python_version >= "3.10" --hash=sha256:abc\n', '/svc', null);
    assert.equal(parsed.torchSpecifier, '>=2.5,<2.14');
    assert.equal(parsed.usesHashes, true);
  });

  it('keeps the sha256 pins of the torch line, so the wheel it picks can be checked against them', () => {
    const a = 'a'.repeat(64);
    const b = 'B'.repeat(64);
    const parsed = parseRequirements(`torch==2.13.0 \\\n    --hash=sha256:${a} \\\n    --hash sha256:${b}\nsympy==1.14.0 --hash=sha256:${'c'.repeat(64)}\n`, '/svc', null);
    assert.deepEqual(parsed.torchHashes, [a, 'b'.repeat(64)]);
    assert.equal(parsed.usesHashes, true);
  });

  it('reads files included with -r as part of the requirements, relative to the file that names them', () => {
    const files = memoryFiles({ '/svc/deps/base.txt': 'numpy==2.1.0\n-r more/extra.txt\n', '/svc/deps/more/extra.txt': 'pillow\n' });
    const parsed = parseRequirements('-r base.txt\nsympy\n', '/svc/deps', null, 'requirements.txt', files);
    assert.deepEqual(parsed.otherLines, ['numpy==2.1.0', 'pillow', 'sympy']);
  });

  it('sees a torch pin and --hash pins inside an included file', () => {
    const a = 'a'.repeat(64);
    const files = memoryFiles({ '/svc/base.txt': `torch==2.13.0 --hash=sha256:${a}\n` });
    const parsed = parseRequirements('-r base.txt\n', '/svc', null, 'requirements.txt', files);
    assert.equal(parsed.torchSpecifier, '==2.13.0');
    assert.deepEqual(parsed.torchHashes, [a]);
    assert.equal(parsed.usesHashes, true);
    assert.deepEqual(parsed.otherLines, []);
  });

  it('takes torch out of constraint files into the torch specifier and keeps the other constraints for pip', () => {
    const files = memoryFiles({ '/svc/pins.txt': 'torch<2.14\nnumpy==2.1.0\n' });
    const parsed = parseRequirements('--constraint=pins.txt\ntorch==2.13.0\nnumpy\n', '/svc', null, 'requirements.txt', files);
    assert.equal(parsed.torchSpecifier, '==2.13.0,<2.14');
    assert.deepEqual(parsed.constraintLines, ['numpy==2.1.0']);
    assert.deepEqual(parsed.otherLines, ['numpy']);
  });

  it('changes the cache key when an included file, a local wheel or a find-links directory changes', () => {
    const base = { '/svc/base.txt': 'numpy==2.1.0\n/svc/wheels/pkg-1.0-py3-none-any.whl\n--find-links ./links\n' };
    const key = (files: Record<string, string>, described: Record<string, unknown>) =>
      parseRequirements('-r base.txt\n', '/svc', null, 'requirements.txt', memoryFiles(files, described)).sourceText;
    const described = { '/svc/wheels/pkg-1.0-py3-none-any.whl': { size: 10 }, '/svc/links': [['a.whl', 1]] };
    const first = key(base, described);
    assert.notEqual(key({ '/svc/base.txt': 'numpy==2.2.0\n' }, described), first, 'included text');
    assert.notEqual(key(base, { ...described, '/svc/wheels/pkg-1.0-py3-none-any.whl': { size: 11 } }), first, 'local wheel');
    assert.notEqual(key(base, { ...described, '/svc/links': [['a.whl', 2]] }), first, 'find-links listing');
    assert.equal(key(base, described), first);
  });

  it('makes a relative find-links directory absolute, as pip reads a copy of the file elsewhere', () => {
    const parsed = parseRequirements('--find-links ./links\npkg\n', '/svc', null, 'requirements.txt', memoryFiles({}, { '/svc/links': [] }));
    assert.deepEqual(parsed.otherLines, ['--find-links /svc/links', 'pkg']);
  });

  it('names the line that includes a file that is not there', () => {
    assert.throws(() => parseRequirements('-r missing.txt\n', '/svc', null, 'requirements.txt', memoryFiles({})), (error: unknown) =>
      code('TORCH_REQUIREMENTS_INVALID')(error) && /requirements\.txt includes \/svc\/missing\.txt/.test((error as Error).message));
  });

  it('joins continued lines', () => {
    const parsed = parseRequirements('torch==2.13.0 \\\n  --hash=sha256:abc\n', '/svc', null);
    assert.equal(parsed.torchSpecifier, '==2.13.0');
  });

  it('lets torchVersion pin torch when the requirements do not', () => {
    assert.equal(parseRequirements('numpy\n', '/svc', '2.13.0').torchSpecifier, '==2.13.0');
  });

  it('refuses a torchVersion that contradicts the requirements', () => {
    assert.throws(() => parseRequirements('torch==2.12.0\n', '/svc', '2.13.0'), code('TORCH_VERSION_CONFLICT'));
  });

  it('refuses torch named by URL', () => {
    assert.throws(() => parseRequirements('torch @ https://example.com/torch.whl\n', '/svc', null), code('TORCH_REQUIREMENT_UNSUPPORTED'));
  });

  it('refuses two different torch lines', () => {
    assert.throws(() => parseRequirements('torch==2.13.0\ntorch==2.12.0\n', '/svc', null), code('TORCH_REQUIREMENT_CONFLICT'));
  });
});

describe('where the requirements are', () => {
  let service: string;
  beforeEach(() => (service = fs.mkdtempSync(path.join(os.tmpdir(), 'find-requirements-'))));
  afterEach(() => fs.rmSync(service, { recursive: true, force: true }));
  const write = (file: string, text: string) => fs.writeFileSync(path.join(service, file), text);

  it('requirements.txt first, else the PEP 621 dependencies of pyproject.toml, read like a requirements file', () => {
    write('pyproject.toml', '[project]\nname = "svc"\ndependencies = ["torch==2.13.0", "numpy>=2"]\n');
    assert.equal(findRequirements(service), path.join(service, 'pyproject.toml'));
    const parsed = readRequirements(path.join(service, 'pyproject.toml'), null);
    assert.equal(parsed.torchSpecifier, '==2.13.0');
    assert.deepEqual(parsed.otherLines, ['numpy>=2']);
    write('requirements.txt', 'numpy\n');
    assert.equal(findRequirements(service), path.join(service, 'requirements.txt'));
  });

  it('none when there are no dependencies, a pyproject.toml for other tools included', () => {
    assert.equal(findRequirements(service), null);
    write('pyproject.toml', '[tool.ruff]\nline-length = 100\n');
    assert.equal(findRequirements(service), null);
  });

  for (const [file, text, named, command] of [
    ['pyproject.toml', '[tool.poetry.dependencies]\ntorch = "2.13.0"\n', "pyproject.toml's \\[tool\\.poetry\\]", 'poetry export -f requirements.txt'],
    ['uv.lock', 'version = 1\n', 'uv\\.lock', 'uv export --format requirements-txt'],
    ['Pipfile', '[packages]\ntorch = "*"\n', 'Pipfile', 'pipenv requirements'],
  ]) {
    it(`names what to export when the dependencies are only in ${file}`, () => {
      write(file, text);
      assert.throws(() => findRequirements(service), { code: 'TORCH_REQUIREMENTS_UNSUPPORTED', message: new RegExp(`in ${named}.*Export them with "${command}`) });
    });
  }
});
