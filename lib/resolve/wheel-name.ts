/** A wheel file name taken apart (PEP 427): name-version(-build)?-python-abi-platform.whl */
export interface WheelName {
  filename: string;
  project: string;
  version: string;
  pythonTags: string[];
  abiTags: string[];
  platformTags: string[];
}

export function parseWheelName(filename: string): WheelName | null {
  const match = /^([^-]+)-([^-]+)(?:-\d[^-]*)?-([^-]+)-([^-]+)-([^-]+)\.whl$/.exec(filename);
  if (!match) return null;
  return {
    filename,
    project: match[1].toLowerCase().replace(/[-_.]+/g, '-'),
    version: decodeURIComponent(match[2]),
    pythonTags: match[3].split('.'),
    abiTags: match[4].split('.'),
    platformTags: match[5].split('.'),
  };
}

/** The glibc a manylinux tag needs, or null for tags that name none (any, linux_*). */
export function glibcOfTag(tag: string): [number, number] | null {
  const pep600 = /^manylinux_(\d+)_(\d+)_/.exec(tag);
  if (pep600) return [Number(pep600[1]), Number(pep600[2])];
  if (tag.startsWith('manylinux2014_')) return [2, 17];
  if (tag.startsWith('manylinux2010_')) return [2, 12];
  if (tag.startsWith('manylinux1_')) return [2, 5];
  return null;
}

export function machineOfTag(tag: string): string | null {
  if (tag === 'any') return null;
  const match = /(x86_64|aarch64|i686|armv7l|ppc64le|s390x|arm64|universal2|amd64|win32)$/.exec(tag);
  return match ? match[1] : 'unknown';
}

/** Release numbers of a PEP 440 version, local part dropped: "2.13.0+cpu" → [2, 13, 0]. */
export function releaseOf(version: string): number[] {
  const release = version.split('+')[0].match(/^\d+(\.\d+)*/);
  return release ? release[0].split('.').map(Number) : [];
}

export function compareReleases(a: number[], b: number[]): number {
  for (let index = 0; index < Math.max(a.length, b.length); index++) {
    const difference = (a[index] ?? 0) - (b[index] ?? 0);
    if (difference !== 0) return difference;
  }
  return 0;
}

/**
 * Whether a version satisfies a specifier such as "==2.13.0", ">=2.5,<2.7" or "~=2.6".
 * Enough of PEP 440 to explain why no wheel matched; pip does the real resolution.
 */
export function satisfies(version: string, specifier: string): boolean {
  const release = releaseOf(version);
  return specifier
    .split(',')
    .map((part) => part.trim())
    .filter(Boolean)
    .every((clause) => {
      const match = /^(===|==|!=|<=|>=|~=|<|>)\s*(.+)$/.exec(clause);
      if (!match) return true;
      const [, operator, wanted] = match;
      const wildcard = wanted.endsWith('.*');
      const wantedRelease = releaseOf(wildcard ? wanted.slice(0, -2) : wanted);
      const order = compareReleases(release, wantedRelease);
      const prefixEqual = wantedRelease.every((part, index) => release[index] === part);
      switch (operator) {
        case '==':
        case '===':
          if (wildcard) return prefixEqual;
          if (wanted.includes('+')) return version === wanted;
          return order === 0;
        case '!=':
          return wildcard ? !prefixEqual : order !== 0;
        case '<=':
          return order <= 0;
        case '>=':
          return order >= 0;
        case '<':
          return order < 0;
        case '>':
          return order > 0;
        case '~=':
          return order >= 0 && wantedRelease.slice(0, -1).every((part, index) => release[index] === part);
        default:
          return true;
      }
    });
}
