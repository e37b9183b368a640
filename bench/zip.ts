// Compares writeZip with archiver (what the framework itself zips with) on a directory tree.
// Usage: node dist/bench/zip.js <dir> [runs=3] [--concurrency N]...  (repeat --concurrency to compare)
// Both get the same sorted entries, modes and level 6; each figure is the median wall time.
import { promises as fsp, constants as fsConstants, createWriteStream } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import archiver from 'archiver';
import { writeZip, type ZipEntry } from '../lib/zip/write';

interface FileEntry {
  name: string;
  absolute: string;
  executable: boolean;
}

async function walk(root: string): Promise<FileEntry[]> {
  const files: FileEntry[] = [];
  const visit = async (dir: string) => {
    for (const dirent of await fsp.readdir(dir, { withFileTypes: true })) {
      const absolute = path.join(dir, dirent.name);
      const stat = await fsp.stat(absolute);
      if (stat.isDirectory()) await visit(absolute);
      else if (stat.isFile()) {
        files.push({
          name: path.relative(root, absolute).split(path.sep).join('/'),
          absolute,
          executable: (stat.mode & fsConstants.S_IXUSR) !== 0,
        });
      }
    }
  };
  await visit(root);
  return files.sort((a, b) => Buffer.compare(Buffer.from(a.name), Buffer.from(b.name)));
}

async function withArchiver(dest: string, files: FileEntry[]): Promise<number> {
  const archive = archiver('zip', { zlib: { level: 6 } });
  const output = createWriteStream(dest);
  const done = new Promise<void>((resolve, reject) => {
    output.on('close', resolve);
    output.on('error', reject);
    archive.on('error', reject);
  });
  archive.pipe(output);
  for (const f of files) {
    archive.file(f.absolute, { name: f.name, mode: f.executable ? 0o755 : 0o644, date: new Date(0) });
  }
  await archive.finalize();
  await done;
  return (await fsp.stat(dest)).size;
}

function median(values: number[]): number {
  const sorted = [...values].sort((a, b) => a - b);
  return sorted[Math.floor(sorted.length / 2)];
}

/** Wall time, and CPU time of the whole process (the threadpool's deflating included). */
async function time<T>(fn: () => Promise<T>): Promise<{ seconds: number; cpu: number; value: T }> {
  const start = process.hrtime.bigint();
  const cpuStart = process.cpuUsage();
  const value = await fn();
  const cpu = process.cpuUsage(cpuStart);
  return { seconds: Number(process.hrtime.bigint() - start) / 1e9, cpu: (cpu.user + cpu.system) / 1e6, value };
}

async function main(): Promise<void> {
  const args = process.argv.slice(2);
  const concurrencies: (number | undefined)[] = [];
  const positional: string[] = [];
  for (let i = 0; i < args.length; i++) {
    if (args[i] === '--concurrency') concurrencies.push(Number(args[++i]));
    else positional.push(args[i]);
  }
  const [dir, runsArg] = positional;
  if (!dir) {
    console.error('usage: node dist/bench/zip.js <dir> [runs=3] [--concurrency N]...');
    process.exit(2);
  }
  const runs = Number(runsArg ?? 3);
  if (concurrencies.length === 0) concurrencies.push(undefined);

  const files = await walk(path.resolve(dir));
  const entries: ZipEntry[] = files.map((f) => ({ name: f.name, source: { path: f.absolute }, executable: f.executable }));
  const totalBytes = (await Promise.all(files.map((f) => fsp.stat(f.absolute)))).reduce((s, st) => s + st.size, 0);
  const work = await fsp.mkdtemp(path.join(os.tmpdir(), 'zip-bench-'));
  console.log(`${files.length} files, ${(totalBytes / 1e6).toFixed(1)} MB, ${runs} runs each, ${os.availableParallelism()} cores`);

  try {
    const rows: { label: string; seconds: number[]; cpu: number[]; bytes: number; sha256?: Set<string> }[] = [];
    for (const c of concurrencies) {
      const label = c === undefined ? 'writeZip' : `writeZip concurrency ${c}`;
      rows.push({ label, seconds: [], cpu: [], bytes: 0, sha256: new Set() });
    }
    const archiverRow = { label: 'archiver', seconds: [] as number[], cpu: [] as number[], bytes: 0 };
    rows.push(archiverRow);

    // Interleaved, so page cache and thermal state favour neither side.
    for (let run = 0; run < runs; run++) {
      for (const [i, c] of concurrencies.entries()) {
        const dest = path.join(work, `writezip-${c ?? 'default'}.zip`);
        const { seconds, cpu, value } = await time(() => writeZip(dest, entries, { level: 6, concurrency: c }));
        rows[i].seconds.push(seconds);
        rows[i].cpu.push(cpu);
        rows[i].bytes = value.bytes;
        rows[i].sha256?.add(value.sha256);
        await fsp.rm(dest);
      }
      const dest = path.join(work, 'archiver.zip');
      const { seconds, cpu, value } = await time(() => withArchiver(dest, files));
      archiverRow.seconds.push(seconds);
      archiverRow.cpu.push(cpu);
      archiverRow.bytes = value;
      await fsp.rm(dest);
    }

    const base = median(archiverRow.seconds);
    for (const row of rows) {
      const m = median(row.seconds);
      const runsText = row.seconds.map((s) => s.toFixed(2)).join(', ');
      const identical = row.sha256 ? (row.sha256.size === 1 ? ', identical every run' : ', DIFFERENT across runs') : '';
      console.log(
        `${row.label.padEnd(24)} median ${m.toFixed(2)} s (${runsText}), cpu ${median(row.cpu).toFixed(1)} s,` +
          `  ${row.bytes} bytes (${(row.bytes / 1e6).toFixed(1)} MB)` +
          `  ${(base / m).toFixed(2)}x archiver${identical}`,
      );
    }
  } finally {
    await fsp.rm(work, { recursive: true, force: true });
  }
}

main().catch((error) => {
  console.error(error);
  process.exit(1);
});
