import * as fs from 'node:fs';
import * as path from 'node:path';
import { TorchError } from '../util/errors';
import { satisfies } from '../resolve/version';
import { normaliseProjectName } from '../util/project-name';

/** The service's requirements, with torch taken out so the plugin can pin the CPU wheel. */
export interface Requirements {
  /** Version specifier for torch ("==2.13.0", ">=2.5", "" for any). */
  torchSpecifier: string;
  /** Every other line, with relative -r/-c paths made absolute so the copy works from anywhere. */
  otherLines: string[];
  /** True when the file uses --hash pins: pip then wants a hash on every line, torch's too. */
  usesHashes: boolean;
  /** sha256 digests the torch line pins (lower-case hex); the chosen torch wheel must have one of them. */
  torchHashes: string[];
  /** What the requirements file said, for the cache key. */
  sourceText: string;
}

const NAME = /^([A-Za-z0-9][A-Za-z0-9._-]*)/;

function logicalLines(text: string): string[] {
  return text
    .replace(/\\\r?\n/g, ' ')
    .split(/\r?\n/)
    .map((line) => line.replace(/(^|\s)#.*$/, '').trim())
    .filter(Boolean);
}

export function parseRequirements(
  text: string,
  fileDir: string,
  torchVersion: string | null,
  fileLabel = 'requirements.txt',
): Requirements {
  let torchSpecifier: string | null = null;
  const otherLines: string[] = [];
  let usesHashes = false;
  const torchHashes: string[] = [];
  for (const line of logicalLines(text)) {
    if (/--hash[=\s]/.test(line)) usesHashes = true;
    const include = /^(-r|--requirement|-c|--constraint)(\s+|=)(.+)$/.exec(line);
    if (include) {
      otherLines.push(`${include[1]} ${path.resolve(fileDir, include[3].trim())}`);
      continue;
    }
    const name = NAME.exec(line);
    if (line.startsWith('-') || !name || normaliseProjectName(name[1]) !== 'torch') {
      otherLines.push(line);
      continue;
    }
    const rest = line.slice(name[1].length).trim();
    for (const pin of rest.matchAll(/--hash[=\s]+sha256:([0-9a-fA-F]{64})/g)) torchHashes.push(pin[1].toLowerCase());
    if (rest.startsWith('@')) {
      throw new TorchError(
        'TORCH_REQUIREMENT_UNSUPPORTED',
        `${fileLabel} names torch by URL ("${line}"). serverless-torch picks the CPU wheel for each ` +
          'Lambda target itself: write a version instead, such as "torch==2.13.0".',
      );
    }
    // Drop extras, environment markers and per-line options; keep the version clauses.
    const specifier = rest
      .replace(/^\[[^\]]*\]/, '')
      .split(';')[0]
      .split(/\s--?[a-z]/)[0]
      .replace(/\s+/g, '')
      .replace(/^\((.*)\)$/, '$1');
    if (torchSpecifier !== null && torchSpecifier !== specifier) {
      throw new TorchError(
        'TORCH_REQUIREMENT_CONFLICT',
        `${fileLabel} names torch twice ("${torchSpecifier}" and "${specifier}"). Keep one line.`,
      );
    }
    torchSpecifier = specifier;
  }
  if (torchVersion !== null) {
    if (torchSpecifier && !satisfies(torchVersion, torchSpecifier)) {
      throw new TorchError(
        'TORCH_VERSION_CONFLICT',
        `custom.torch.torchVersion is "${torchVersion}" but ${fileLabel} asks for torch${torchSpecifier}. ` +
          'Remove one of them or make them agree.',
      );
    }
    torchSpecifier = `==${torchVersion}`;
  }
  return { torchSpecifier: torchSpecifier ?? '', otherLines, usesHashes, torchHashes, sourceText: text };
}

export function readRequirements(requirementsPath: string | null, torchVersion: string | null): Requirements {
  if (requirementsPath === null) return parseRequirements('', process.cwd(), torchVersion);
  let text: string;
  try {
    text = fs.readFileSync(requirementsPath, 'utf8');
  } catch (error) {
    throw new TorchError(
      'TORCH_REQUIREMENTS_UNREADABLE',
      `The requirements file ${requirementsPath} cannot be read (${(error as Error).message}). Fix its permissions or path.`,
      { cause: error },
    );
  }
  return parseRequirements(text, path.dirname(requirementsPath), torchVersion, path.basename(requirementsPath));
}
