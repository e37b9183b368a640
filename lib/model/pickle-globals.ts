// The globals a pickle names (module.name), read from its opcodes without running it. Pickles
// written with protocols 0-3 name them inline (GLOBAL, INST); protocol 4 and 5 push both
// strings and call STACK_GLOBAL, often through the memo. Enough of the format to tell a state
// dict (tensors, containers) from a pickled module at package time: it checks the file a user
// packages, and is not a defence against a crafted one (the shim's loaders are).

/** How each opcode's argument is laid out after the opcode byte. */
type Argument =
  | { kind: 'none' }
  | { kind: 'fixed'; bytes: number }
  | { kind: 'line'; lines: number }
  /** A length of `bytes` little-endian bytes, then that many bytes of data. */
  | { kind: 'counted'; bytes: number; text?: boolean };

const none = { kind: 'none' } as const;
const fixed = (bytes: number) => ({ kind: 'fixed', bytes }) as const;
const line = (lines = 1) => ({ kind: 'line', lines }) as const;
const counted = (bytes: number, text = false) => ({ kind: 'counted', bytes, text }) as const;

// pickletools' opcode table, by opcode byte.
const OPCODES: Record<string, Argument> = {
  '(': none, '.': none, '0': none, '1': none, '2': none, F: line(), I: line(), J: fixed(4), K: fixed(1), L: line(),
  M: fixed(2), N: none, P: line(), Q: none, R: none, S: line(), T: counted(4), U: counted(1), V: line(),
  X: counted(4, true), a: none, b: none, c: line(2), d: none, '}': none, e: none, g: line(), h: fixed(1),
  i: line(2), j: fixed(4), l: none, ']': none, o: none, p: line(), q: fixed(1), r: fixed(4), s: none, t: none,
  ')': none, u: none, G: fixed(8), B: counted(4), C: counted(1),
  '\x80': fixed(1), '\x81': none, '\x82': fixed(1), '\x83': fixed(2), '\x84': fixed(4), '\x85': none, '\x86': none,
  '\x87': none, '\x88': none, '\x89': none, '\x8a': counted(1), '\x8b': counted(4), '\x8c': counted(1, true),
  '\x8d': counted(8, true), '\x8e': counted(8), '\x8f': none, '\x90': none, '\x91': none, '\x92': none, '\x93': none,
  '\x94': none, '\x95': fixed(8), '\x96': counted(8), '\x97': none, '\x98': none,
};

const STRING_LINE_OPS = new Set(['S', 'V']);
const GET_OPS = new Set(['g', 'h', 'j']);
const PUT_OPS = new Set(['p', 'q', 'r']);

export interface PickleScan {
  /** "module.name" of every GLOBAL, INST and STACK_GLOBAL, in order of appearance. */
  globals: string[];
  /** Offset just past the STOP opcode: where a following pickle starts. */
  end: number;
}

function readLength(data: Buffer, at: number, bytes: number): number {
  if (bytes === 1) return data[at];
  if (bytes === 4) return data.readUInt32LE(at);
  return Number(data.readBigUInt64LE(at));
}

/** Reads one pickle from `start` up to its STOP opcode; throws on bytes that are not a pickle. */
export function scanPickle(data: Buffer, start = 0): PickleScan {
  const globals: string[] = [];
  // The strings most recently pushed (null for any other value), and the memo, for STACK_GLOBAL.
  const pushed: (string | null)[] = [];
  const memo = new Map<number, string | null>();
  let at = start;
  while (at < data.length) {
    const op = String.fromCharCode(data[at++]);
    const argument = OPCODES[op];
    if (!argument) throw new Error(`not a pickle: opcode 0x${op.charCodeAt(0).toString(16)} at byte ${at - 1}`);
    let value: string | null = null;
    let lines: string[] = [];
    if (argument.kind === 'fixed') {
      if (GET_OPS.has(op) || PUT_OPS.has(op)) value = String(readLength(data, at, argument.bytes));
      at += argument.bytes;
    } else if (argument.kind === 'line') {
      for (let n = 0; n < argument.lines; n++) {
        const newline = data.indexOf(0x0a, at);
        if (newline < 0) throw new Error('not a pickle: a line argument runs past the end');
        lines.push(data.toString('latin1', at, newline));
        at = newline + 1;
      }
    } else if (argument.kind === 'counted') {
      const length = readLength(data, at, argument.bytes);
      at += argument.bytes;
      if (at + length > data.length) throw new Error('not a pickle: an argument runs past the end');
      if (argument.text) value = data.toString('utf8', at, at + length);
      at += length;
    }
    if (op === '.') return { globals, end: at };
    if (op === 'c' || op === 'i') {
      globals.push(`${lines[0]}.${lines[1]}`);
      pushed.push(null);
    } else if (op === '\x93') {
      const name = pushed.pop();
      const module = pushed.pop();
      if (typeof module === 'string' && typeof name === 'string') globals.push(`${module}.${name}`);
      pushed.push(null);
    } else if (op === '\x94') {
      memo.set(memo.size, pushed[pushed.length - 1] ?? null);
    } else if (PUT_OPS.has(op)) {
      memo.set(Number(op === 'p' ? lines[0] : value), pushed[pushed.length - 1] ?? null);
    } else if (GET_OPS.has(op)) {
      pushed.push(memo.get(Number(op === 'g' ? lines[0] : value)) ?? null);
    } else if (argument.kind === 'counted' && argument.text) {
      pushed.push(value);
    } else if (STRING_LINE_OPS.has(op)) {
      pushed.push(lines[0].replace(/^'(.*)'$|^"(.*)"$/, '$1$2'));
    } else if (op !== '\x95' && op !== '\x80') {
      pushed.push(null);
    }
  }
  throw new Error('not a pickle: no STOP opcode');
}

/**
 * The globals of a torch.save file in the legacy (non-zip) format: pickles of the magic number,
 * the protocol version and system information, then the object itself; raw storage bytes follow.
 */
export function scanLegacyCheckpoint(data: Buffer): string[] {
  const globals: string[] = [];
  let at = 0;
  for (let index = 0; index < 4; index++) {
    const scan = scanPickle(data, at);
    globals.push(...scan.globals);
    at = scan.end;
  }
  return globals;
}
