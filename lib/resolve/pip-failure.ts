import * as fs from 'node:fs';
import * as path from 'node:path';
import { COLD_BUILD_WHEEL_FACTOR, TYPICAL_COLD_BUILD_BYTES, diskFullError, fullestDirectory, isDiskFull, pathInDiskFullMessage } from '../util/disk-space';
import { TorchError } from '../util/errors';

/** The last lines of a process's output, joined on one line for an error message. */
export function lastLines(text: string, count = 4): string {
  return text.trim().split('\n').slice(-count).join(' | ');
}

/**
 * Failures pip reports the same way whatever it was doing: a full disk, bytes that do not match
 * their sha256, an index it could not reach. `step` is what pip was asked to do ("download torch");
 * `dir` is where it was writing. A full disk and a hash mismatch are checked first: pip may also
 * have printed retry warnings on the way to either.
 */
export function knownPipFailure(step: string, index: string, output: string, dir?: string): TorchError | null {
  if (isDiskFull(output)) {
    const wheelMb = /Downloading \S*torch-[^\s/]+\.whl \(([\d.]+) MB\)/.exec(output)?.[1];
    const wheelBytes = wheelMb ? Math.round(Number(wheelMb) * 1e6) : null;
    return diskFullError({
      // pip may name its own temporary file (the source of a copy), on another disk than the one that filled up.
      dir: fullestDirectory([pathInDiskFullMessage(output) && path.dirname(pathInDiskFullMessage(output)!), dir]),
      step: `pip tried to ${step}`,
      neededBytes: wheelBytes ? wheelBytes * COLD_BUILD_WHEEL_FACTOR : TYPICAL_COLD_BUILD_BYTES,
      neededFor: wheelBytes
        ? `the ${(wheelBytes / 1e6).toFixed(1)} MB torch wheel, its installed files and their stripped copy`
        : 'a recent CPU torch: the wheel, its installed files and their stripped copy',
    });
  }
  const mismatch = hashMismatch(step, output);
  if (mismatch) return mismatch;
  const reason = /(\[Errno -?\d+\] [^'")\n]+|Name or service not known|Temporary failure in name resolution|Read timed out|timed out|certificate verify failed|ProxyError[^'"\n]*)/i.exec(
    output.split('\n').filter((line) => /Retrying|NewConnectionError|ConnectTimeout|ReadTimeout|SSLError|ProxyError|Max retries|Could not fetch URL/i.test(line)).join('\n'),
  );
  if (reason) {
    return new TorchError(
      'TORCH_INDEX_UNREACHABLE',
      `pip could not reach ${index} to ${step}: ${reason[1].trim()}. Check the URL, the network or proxy, ` +
        'or point custom.torch.torchIndexUrl / indexUrl at a mirror you can reach.',
    );
  }
  return null;
}

/** pip's "THESE PACKAGES DO NOT MATCH THE HASHES" block, as the file, where it came from, and both digests. */
export function hashMismatch(step: string, output: string): TorchError | null {
  const at = output.indexOf('THESE PACKAGES DO NOT MATCH THE HASHES');
  if (at < 0) return null;
  const block = output.slice(at);
  const source = /\sfrom (\S+?)(?:#sha256=[0-9a-f]+)?(?::\s|\s\(from )/.exec(block)?.[1] ?? null;
  const file = source ? decodeURIComponent(source.split('/').pop()!) : 'a downloaded file';
  const expected = [...block.matchAll(/(?:Expected sha256|\bor)\s+([0-9a-f]{64})/g)].map((match) => match[1]);
  const got = /Got\s+([0-9a-f]{64})/.exec(block)?.[1] ?? 'something else';
  return new TorchError(
    'TORCH_WHEEL_HASH_MISMATCH',
    `pip refused ${file}${source ? ` from ${decodeURIComponent(source)}` : ''} (asked to ${step}): expected sha256 ` +
      `${expected.join(' or ') || '(see pip)'}, got ${got}. The index, a mirror or a proxy served other bytes than the ` +
      'sha256 it lists or your requirements pin with --hash: fix the index or the pin; do not turn the check off.',
  );
}

export function pipFailure(step: string, index: string, output: string, dir?: string): TorchError {
  const known = knownPipFailure(step, index, output, dir);
  if (known) return known;
  return new TorchError('TORCH_PIP_FAILED', `pip could not ${step} from ${index}: ${lastLines(output, 6)}`);
}

/**
 * pip's complaints about the requirements themselves, pointed at the user's file: pip reads a
 * copy (torch replaced), so the line numbers it gives are not the user's.
 */
export function requirementsProblem(output: string, requirementsPath: string | null): TorchError | null {
  const label = requirementsPath ? path.basename(requirementsPath) : 'requirements.txt';
  const invalid = /Invalid requirement: '([^']*)'/.exec(output);
  if (invalid) {
    const hint = /^Hint: (.+)$/m.exec(output)?.[1];
    const text = requirementsPath && fs.existsSync(requirementsPath) ? fs.readFileSync(requirementsPath, 'utf8') : '';
    const lineIndex = text.split(/\r?\n/).findIndex((line) => line.includes(invalid[1]));
    // Not found: the line is in a file the requirements include with -r.
    const where = lineIndex >= 0 ? `${label} line ${lineIndex + 1}` : `${label} (or a file it includes)`;
    return new TorchError(
      'TORCH_REQUIREMENTS_INVALID',
      `${where}: "${invalid[1]}" is not a valid requirement${hint ? ` (pip: ${hint})` : ''}. Fix that line; ` +
        'requirements are written like "sympy==1.14.0" or "sympy>=1.13".',
    );
  }
  const unopened = /Could not open requirements file: (.+)/.exec(output);
  if (unopened) {
    return new TorchError('TORCH_REQUIREMENTS_INVALID', `pip could not open a file your ${label} includes: ${unopened[1].trim()}. Fix the -r or -c line.`);
  }
  if (/Hashes are required in --require-hashes mode|In --require-hashes mode, all requirements must have their versions pinned/.test(output)) {
    const unpinned = [...output.matchAll(/^\s{4}(\S+)(?: from [^\n]*)?(?: --hash=sha256:([0-9a-f]{64}))?$/gm)]
      .map((match) => (match[2] ? `${match[1]} --hash=sha256:${match[2]}` : match[1]))
      .slice(0, 8);
    return new TorchError(
      'TORCH_REQUIREMENTS_INVALID',
      `${label} uses --hash pins, so pip checks every package it installs and needs each one pinned with == and a hash, ` +
        `torch's dependencies too. Missing: ${unpinned.join('; ') || lastLines(output, 4)}. Add those lines (serverless-torch ` +
        'adds the hash of the torch wheel itself), or remove every --hash.',
    );
  }
  return null;
}
