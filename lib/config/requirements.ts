import * as fs from 'node:fs';
import * as path from 'node:path';
import { parse as parseToml } from 'smol-toml';
import { satisfies } from '../resolve/version';
import { TorchError } from '../util/errors';
import { normaliseProjectName } from '../util/project-name';

/**
 * The service's requirements, with torch taken out so the plugin can pin the CPU wheel. Files
 * included with -r and -c are read as part of them: a torch pin or a --hash in an included file
 * counts, and editing an included file changes the cache key.
 */
export interface Requirements {
  /** Version specifier for torch ("==2.13.0", ">=2.5", "" for any). */
  torchSpecifier: string;
  /** Every other line of the file and of the files it includes with -r, in order. */
  otherLines: string[];
  /** The lines of the constraint files (-c), torch's taken out: pip gets them as one constraints file. */
  constraintLines: string[];
  /** True when a file uses --hash pins: pip then wants a hash on every line, torch's too. */
  usesHashes: boolean;
  /** sha256 digests the torch line pins (lower-case hex); the chosen torch wheel must have one of them. */
  torchHashes: string[];
  /** Everything the resolution depends on, for the cache key: each file's text, and the local wheels and find-links directories they name. */
  sourceText: string;
}

/** How the parser reaches included files and local artifacts; tests hand in a map. */
export interface RequirementFiles {
  read(file: string): string;
  /** Size and modification time of a local wheel, or a find-links directory's listing; null when absent. */
  describe(file: string): unknown;
}

const onDisk: RequirementFiles = {
  read: (file) => fs.readFileSync(file, 'utf8'),
  describe: (file) => {
    try {
      const stat = fs.statSync(file);
      if (!stat.isDirectory()) return { size: stat.size, mtimeMs: stat.mtimeMs };
      return fs.readdirSync(file).sort().map((name) => {
        const entry = fs.statSync(path.join(file, name));
        return [name, entry.size, entry.mtimeMs];
      });
    } catch {
      return null;
    }
  },
};

const NAME = /^([A-Za-z0-9][A-Za-z0-9._-]*)/;
const INCLUDE = /^(-r|--requirement|-c|--constraint)(?:\s+|=)(.+)$/;
const FIND_LINKS = /^(-f|--find-links)(?:\s+|=)(.+)$/;

function logicalLines(text: string): string[] {
  return text
    .replace(/\\\r?\n/g, ' ')
    .split(/\r?\n/)
    .map((line) => line.replace(/(^|\s)#.*$/, '').trim())
    .filter(Boolean);
}

/** The version clauses of a torch line: extras, environment markers and per-line options dropped. */
function torchClauses(line: string, rest: string, label: string): string {
  if (rest.startsWith('@')) {
    throw new TorchError(
      'TORCH_REQUIREMENT_UNSUPPORTED',
      `${label} names torch by URL ("${line}"). serverless-torch picks the CPU wheel for each ` +
        'Lambda target itself: write a version instead, such as "torch==2.13.0".',
    );
  }
  return rest
    .replace(/^\[[^\]]*\]/, '')
    .split(';')[0]
    .split(/\s--?[a-z]/)[0]
    .replace(/\s+/g, '')
    .replace(/^\((.*)\)$/, '$1');
}

/** What reading the files gathers, before torchVersion is applied. */
class Gathered {
  requirementSpecifier: string | null = null;
  constraintSpecifiers: string[] = [];
  otherLines: string[] = [];
  constraintLines: string[] = [];
  usesHashes = false;
  torchHashes: string[] = [];
  sources: unknown[] = [];
  readonly visited = new Set<string>();

  constructor(
    readonly files: RequirementFiles,
    readonly topDir: string,
  ) {}

  /** A path as the cache key records it: relative to the top file when inside its directory. */
  shown(file: string): string {
    const relative = path.relative(this.topDir, file);
    return relative.startsWith('..') ? file : relative.split(path.sep).join('/');
  }
}

function readFile(gathered: Gathered, file: string, constraint: boolean, includedFrom: string | null): void {
  const absolute = path.resolve(file);
  if (gathered.visited.has(`${constraint}:${absolute}`)) return;
  gathered.visited.add(`${constraint}:${absolute}`);
  let text: string;
  try {
    text = gathered.files.read(absolute);
  } catch (error) {
    throw new TorchError(
      includedFrom ? 'TORCH_REQUIREMENTS_INVALID' : 'TORCH_REQUIREMENTS_UNREADABLE',
      includedFrom
        ? `${includedFrom} includes ${absolute}, which cannot be read (${(error as Error).message}). Fix the -r or -c line.`
        : `The requirements file ${absolute} cannot be read (${(error as Error).message}). Fix its permissions or path.`,
      { cause: error },
    );
  }
  gathered.sources.push({ file: gathered.shown(absolute), constraint, text });
  parseLines(gathered, text, path.dirname(absolute), path.basename(absolute), constraint);
}

function parseLines(gathered: Gathered, text: string, fileDir: string, label: string, constraint: boolean): void {
  const lines = constraint ? gathered.constraintLines : gathered.otherLines;
  for (const line of logicalLines(text)) {
    if (/--hash[=\s]/.test(line)) gathered.usesHashes = true;
    const include = INCLUDE.exec(line);
    if (include) {
      // pip reads an included path relative to the file that names it.
      readFile(gathered, path.resolve(fileDir, include[2].trim()), constraint || include[1].startsWith('-c') || include[1] === '--constraint', label);
      continue;
    }
    const findLinks = FIND_LINKS.exec(line);
    if (findLinks) {
      // pip takes a relative find-links path relative to the file when it exists there; pip
      // reads a copy of the file elsewhere, so the path is made absolute here.
      const given = findLinks[2].trim();
      const local = /^[a-z][a-z0-9+.-]*:\/\//i.test(given) ? null : path.resolve(fileDir, given);
      const value = local && gathered.files.describe(local) !== null ? local : given;
      if (local) gathered.sources.push({ findLinks: gathered.shown(value), listing: gathered.files.describe(value) });
      lines.push(`--find-links ${value}`);
      continue;
    }
    const name = NAME.exec(line);
    if (line.startsWith('-') || !name || normaliseProjectName(name[1]) !== 'torch') {
      const localArtifact = /^(\.{0,2}\/|file:)\S*|^\S+\.whl\b/.exec(line)?.[0];
      if (localArtifact) {
        const file = path.resolve(localArtifact.replace(/^file:(\/\/)?/, ''));
        gathered.sources.push({ artifact: gathered.shown(file), stat: gathered.files.describe(file) });
      }
      lines.push(line);
      continue;
    }
    const rest = line.slice(name[1].length).trim();
    for (const pin of rest.matchAll(/--hash[=\s]+sha256:([0-9a-fA-F]{64})/g)) gathered.torchHashes.push(pin[1].toLowerCase());
    const clauses = torchClauses(line, rest, label);
    if (constraint) {
      if (clauses) gathered.constraintSpecifiers.push(clauses);
    } else if (gathered.requirementSpecifier !== null && gathered.requirementSpecifier !== clauses) {
      throw new TorchError(
        'TORCH_REQUIREMENT_CONFLICT',
        `${label} names torch twice ("${gathered.requirementSpecifier}" and "${clauses}"). Keep one line.`,
      );
    } else {
      gathered.requirementSpecifier = clauses;
    }
  }
}

/** Applies custom.torch.torchVersion, which must agree with every torch clause of the files. */
function finish(gathered: Gathered, torchVersion: string | null, label: string): Requirements {
  const clauses = [gathered.requirementSpecifier, ...gathered.constraintSpecifiers].filter((clause): clause is string => Boolean(clause));
  let torchSpecifier = clauses.join(',');
  if (torchVersion !== null) {
    if (torchSpecifier && !satisfies(torchVersion, torchSpecifier)) {
      throw new TorchError(
        'TORCH_VERSION_CONFLICT',
        `custom.torch.torchVersion is "${torchVersion}" but ${label} asks for torch${torchSpecifier}. ` +
          'Remove one of them or make them agree.',
      );
    }
    torchSpecifier = `==${torchVersion}`;
  }
  return {
    torchSpecifier,
    otherLines: gathered.otherLines,
    constraintLines: gathered.constraintLines,
    usesHashes: gathered.usesHashes,
    torchHashes: gathered.torchHashes,
    sourceText: JSON.stringify(gathered.sources),
  };
}

/** Parses requirements text (the file at `fileDir/fileLabel`), reading the files it includes through `files`. */
export function parseRequirements(
  text: string,
  fileDir: string,
  torchVersion: string | null,
  fileLabel = 'requirements.txt',
  files: RequirementFiles = onDisk,
): Requirements {
  const gathered = new Gathered(files, fileDir);
  gathered.sources.push({ file: fileLabel, constraint: false, text });
  gathered.visited.add(`false:${path.resolve(fileDir, fileLabel)}`);
  parseLines(gathered, text, fileDir, fileLabel, false);
  return finish(gathered, torchVersion, fileLabel);
}

/**
 * Where the service's requirements are: requirements.txt, else the PEP 621 dependencies of
 * pyproject.toml, else none. A service whose dependencies live only in another tool's format
 * (Poetry, uv or Pipenv lock files) is told what to export.
 */
export function findRequirements(serviceDir: string): string | null {
  const at = (name: string) => path.join(serviceDir, name);
  if (fs.existsSync(at('requirements.txt'))) return at('requirements.txt');
  const pyproject = fs.existsSync(at('pyproject.toml')) ? readPyproject(at('pyproject.toml')) : null;
  if (pyproject && projectDependencies(pyproject, at('pyproject.toml')) !== null) return at('pyproject.toml');
  const poetry = (pyproject?.tool as { poetry?: { dependencies?: unknown } } | undefined)?.poetry?.dependencies !== undefined;
  const other = [
    { file: 'poetry.lock', exists: poetry || fs.existsSync(at('poetry.lock')), export: 'poetry export -f requirements.txt -o requirements.txt' },
    { file: 'uv.lock', exists: fs.existsSync(at('uv.lock')), export: 'uv export --format requirements-txt -o requirements.txt' },
    { file: 'Pipfile', exists: fs.existsSync(at('Pipfile')), export: 'pipenv requirements > requirements.txt' },
  ].find(({ exists }) => exists);
  if (!other) return null;
  throw new TorchError(
    'TORCH_REQUIREMENTS_UNSUPPORTED',
    `The service's dependencies are in ${other.file === 'poetry.lock' && poetry ? "pyproject.toml's [tool.poetry]" : other.file}, which serverless-torch ` +
      'does not read: it reads requirements.txt, or the [project].dependencies (PEP 621) of pyproject.toml. ' +
      `Export them with "${other.export}", or set custom.torch.requirements to such a file.`,
  );
}

function readPyproject(file: string): Record<string, unknown> {
  try {
    return parseToml(fs.readFileSync(file, 'utf8')) as Record<string, unknown>;
  } catch (error) {
    throw new TorchError('TORCH_REQUIREMENTS_INVALID', `${file} is not valid TOML (${(error as Error).message}). Fix it, or point custom.torch.requirements at a requirements file.`, { cause: error });
  }
}

/** The PEP 621 dependencies of a parsed pyproject.toml, or null when its [project] table has none. */
function projectDependencies(parsed: Record<string, unknown>, file: string): string[] | null {
  const dependencies = (parsed.project as { dependencies?: unknown } | undefined)?.dependencies;
  if (dependencies === undefined) return null;
  if (!Array.isArray(dependencies) || dependencies.some((line) => typeof line !== 'string')) {
    throw new TorchError('TORCH_REQUIREMENTS_INVALID', `${file}: [project].dependencies must be a list of requirement strings (PEP 621).`);
  }
  return dependencies as string[];
}

export function readRequirements(requirementsPath: string | null, torchVersion: string | null): Requirements {
  if (requirementsPath === null) return parseRequirements('', process.cwd(), torchVersion);
  if (path.basename(requirementsPath) === 'pyproject.toml') {
    const lines = projectDependencies(readPyproject(requirementsPath), requirementsPath);
    if (lines === null) throw new TorchError('TORCH_REQUIREMENTS_INVALID', `${requirementsPath} has no [project].dependencies (PEP 621) to read.`);
    return parseRequirements(lines.join('\n'), path.dirname(requirementsPath), torchVersion, 'pyproject.toml [project].dependencies');
  }
  const gathered = new Gathered(onDisk, path.dirname(requirementsPath));
  readFile(gathered, requirementsPath, false, null);
  return finish(gathered, torchVersion, path.basename(requirementsPath));
}
