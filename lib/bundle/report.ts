import { formatBytes } from '../util/format';
import { UNZIPPED_LIMIT } from './limits';
import { QuantizationReport } from '../model/quantize';
import type { Compression } from './layer-build';

/** What one function weighs against Lambda's limits, as printed after packaging. */
export interface FunctionReport {
  functionName: string;
  target: string;
  torch: { version: string; wheel: string };
  code: { unzippedBytes: number; zippedBytes: number };
  model: { bytes: number; loader: string };
  /** What quantize: dynamic did, with the engine this function's architecture runs it with. */
  quantization: (QuantizationReport & { engine: string }) | null;
  layers: { name: string; role: string; unzippedBytes: number; zippedBytes: number }[];
  totalUnzippedBytes: number;
  tmpBytes: number;
  /** How the compressed layer was made; null when nothing travels compressed. */
  compression: Compression | null;
  ephemeralStorageSize: number;
}

function row(cells: string[], widths: number[]): string {
  return cells.map((cell, index) => (index === 0 ? cell.padEnd(widths[index]) : cell.padStart(widths[index]))).join('  ');
}

/** The table shown after packaging: what each function weighs against Lambda's limits. */
export function formatReport(report: FunctionReport): string {
  const percent = (bytes: number) => `${((bytes / UNZIPPED_LIMIT) * 100).toFixed(0)}%`;
  const lines: string[][] = [
    ['part', 'unzipped', 'zipped'],
    ['code + shim', formatBytes(report.code.unzippedBytes - report.model.bytes), ''],
    [`model (${report.model.loader}${report.quantization?.quantized ? ', int8' : ''})`, formatBytes(report.model.bytes), ''],
    ['function zip', formatBytes(report.code.unzippedBytes), formatBytes(report.code.zippedBytes)],
    ...report.layers.map((layer) => [
      `layer ${layer.name}${layer.role === 'packed' ? ' (compressed deps)' : ''}`,
      formatBytes(layer.unzippedBytes),
      formatBytes(layer.zippedBytes),
    ]),
    [`total / limit ${formatBytes(UNZIPPED_LIMIT)}`, `${formatBytes(report.totalUnzippedBytes)} (${percent(report.totalUnzippedBytes)})`, ''],
  ];
  const widths = [0, 1, 2].map((column) => Math.max(...lines.map((line) => line[column].length)));
  const tmp = report.tmpBytes
    ? `/tmp at cold start: ${formatBytes(report.tmpBytes)} of ${report.ephemeralStorageSize} MB`
    : '/tmp at cold start: nothing to unpack';
  return [
    `${report.functionName} (${report.target}, torch ${report.torch.version}, ${report.torch.wheel})`,
    ...lines.map((line) => `  ${row(line, widths)}`),
    `  ${tmp}; layers ${report.layers.length} (Lambda allows 5 per function)`,
    ...(report.compression ? [`  ${formatCompression(report.compression, report.target)}`] : []),
    ...(report.quantization ? formatQuantization(report.quantization).map((line) => `  ${line}`) : []),
  ].join('\n');
}

/** Which codec and level the compressed layer uses, and, for zlib, why not zstd and what it costs. */
export function formatCompression(compression: Compression, target: string): string {
  const what = `compressed with ${compression.codec} level ${compression.level}: ${compression.units.length} of the dependencies in ${compression.frames} frames, ${formatBytes(compression.archiveBytes)}`;
  if (!compression.fallback) return what;
  return (
    `${what}; zlib because ${compression.fallback}: unpacking at cold start takes about 4 times longer than with zstd, and the ` +
    `archive is 15% larger. Put a zstandard wheel for ${target} on your index (or use python3.14) to get zstd`
  );
}

function formatMs(milliseconds: number): string {
  return `${milliseconds < 1 ? milliseconds.toPrecision(2) : milliseconds.toFixed(milliseconds < 10 ? 2 : 1)} ms`;
}

/** What quantize: dynamic gained and cost, in the words a user decides with. */
export function formatQuantization(quantization: NonNullable<FunctionReport['quantization']>): string[] {
  if (!quantization.quantized) {
    return ['quantize: dynamic: nothing quantized (no Linear, LSTM or GRU layers); the float model ships'];
  }
  const layers = Object.entries(quantization.layers).map(([type, count]) => `${count} ${type}`).join(', ');
  const lines = [
    `quantize: dynamic (int8 ${layers}): model ${formatBytes(quantization.floatBytes)} → ${formatBytes(quantization.bytes)}, ` +
      `${(quantization.floatBytes / quantization.bytes).toFixed(1)}x smaller${quantization.reused ? ' (cached)' : ''}`,
  ];
  const measured = quantization.engines[quantization.engine];
  if (!quantization.sampleInput) {
    lines.push('  set custom.torch.sampleInput to measure the output difference and the latency');
  } else if (!measured || measured.maxAbsDiff === undefined) {
    lines.push(`  the ${quantization.engine} engine this function uses is not in this machine's torch: not measured`);
  } else {
    const relative = measured.maxRelDiff === null || measured.maxRelDiff === undefined ? '' : ` (${(measured.maxRelDiff * 100).toFixed(2)}% of the largest output)`;
    lines.push(
      `  on ${quantization.sampleInput}: max output difference ${measured.maxAbsDiff.toPrecision(3)}${relative}; ` +
        `per call ${formatMs(measured.floatMs!)} float, ${formatMs(measured.quantizedMs!)} int8 ` +
        `(median of ${measured.calls}, 1 thread, ${quantization.engine} engine, on this machine)`,
    );
  }
  return lines;
}
