// Enough of PEP 440 versions and specifiers to explain a resolution; pip does the real one.

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

/** The one version an exact pin ("==2.5.1", "===2.5.1+cpu") allows, else null. */
export function pinnedVersion(specifier: string): string | null {
  const match = /^===?\s*([0-9][0-9A-Za-z.+!]*)$/.exec(specifier.trim());
  return match && !match[1].endsWith('.*') ? match[1] : null;
}
