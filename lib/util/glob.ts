/**
 * Glob patterns for paths inside the dependency tree. A pattern with a slash matches the whole
 * relative path ("torch/test/**"); one without matches a file name anywhere ("*.pyi").
 * `**` crosses directories, `*` and `?` do not, `{a,b}` is either.
 */
export function globToRegExp(pattern: string): RegExp {
  const anchored = pattern.includes('/');
  let source = '';
  for (let index = 0; index < pattern.length; index++) {
    const char = pattern[index];
    if (char === '*' && pattern[index + 1] === '*') {
      const slashAfter = pattern[index + 2] === '/';
      source += slashAfter ? '(?:.*/)?' : '.*';
      index += slashAfter ? 2 : 1;
    } else if (char === '*') {
      source += '[^/]*';
    } else if (char === '?') {
      source += '[^/]';
    } else if (char === '{') {
      const end = pattern.indexOf('}', index);
      if (end === -1) {
        source += '\\{';
        continue;
      }
      const options = pattern.slice(index + 1, end).split(',').map((option) => option.replace(/[.+^$()|[\]\\]/g, '\\$&'));
      source += `(?:${options.join('|')})`;
      index = end;
    } else {
      source += char.replace(/[.+^$()|[\]\\]/g, '\\$&');
    }
  }
  return new RegExp(anchored ? `^${source}$` : `(?:^|/)${source}$`);
}

export function matcher(patterns: string[]): (relativePath: string) => string | null {
  const compiled = patterns.map((pattern) => ({ pattern, regexp: globToRegExp(pattern) }));
  return (relativePath) => compiled.find(({ regexp }) => regexp.test(relativePath))?.pattern ?? null;
}
