import { TorchError } from '../util/errors';

function editDistance(a: string, b: string): number {
  const row = Array.from({ length: b.length + 1 }, (_, index) => index);
  for (let i = 1; i <= a.length; i++) {
    let previous = row[0];
    row[0] = i;
    for (let j = 1; j <= b.length; j++) {
      const current = row[j];
      row[j] = Math.min(row[j] + 1, row[j - 1] + 1, previous + (a[i - 1] === b[j - 1] ? 0 : 1));
      previous = current;
    }
  }
  return row[b.length];
}

/** " Did you mean …?" for a misspelt name, or nothing when no known name is close. */
export function suggestion(wrong: string, known: string[]): string {
  const ranked = known
    .map((name) => ({ name, distance: editDistance(wrong.toLowerCase(), name.toLowerCase()) }))
    .sort((a, b) => a.distance - b.distance);
  return ranked.length && ranked[0].distance <= 3 ? ` Did you mean "${ranked[0].name}"?` : '';
}

export function describe(value: unknown): string {
  return JSON.stringify(value) ?? String(value);
}

export function invalid(option: string, value: unknown, expected: string): TorchError {
  return new TorchError(
    'TORCH_CONFIG_INVALID',
    `${/^(custom|functions)\./.test(option) ? option : `custom.torch.${option}`} is ${describe(value)}, but it must be ${expected}.`,
  );
}

export function unknownOption(where: string, name: string, known: string[]): TorchError {
  return new TorchError(
    'TORCH_CONFIG_UNKNOWN_OPTION',
    `${where}.${name} is not an option of serverless-torch.${suggestion(name, known)} ` +
      `Options there: ${known.join(', ')}.`,
  );
}

export function checkString(option: string, value: unknown): string | undefined {
  if (value === undefined) return undefined;
  if (typeof value !== 'string' || value.trim() === '') throw invalid(option, value, 'a non-empty string');
  return value;
}

export function checkGlobs(option: string, value: unknown): string[] {
  if (value === undefined) return [];
  if (!Array.isArray(value) || value.some((item) => typeof item !== 'string' || item === '')) {
    throw invalid(option, value, 'a list of glob patterns (strings)');
  }
  return value as string[];
}

export function checkUrl(option: string, value: unknown): string | undefined {
  const url = checkString(option, value);
  if (url === undefined) return undefined;
  if (!/^(https?|file):\/\//.test(url)) {
    throw invalid(option, url, 'an http(s):// or file:// index URL such as "https://download.pytorch.org/whl/cpu"');
  }
  return url;
}
