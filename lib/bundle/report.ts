import { formatBytes } from '../util/format';
import { UNZIPPED_LIMIT } from './limits';
import { QuantizationReport } from '../model/quantize';
import { HandlerForm } from './handler-form';
import type { Compression } from './layer-build';

/** What one function weighs against Lambda's limits, as printed after packaging. */
export interface FunctionReport {
  functionName: string;
  target: string;
  torch: { version: string; wheel: string };
  code: { unzippedBytes: number; zippedBytes: number };
  /** The function's own model (path null and loader "none" for a function without one); otherModelBytes: other functions' models in the same zip. */
  model: { path: string | null; bytes: number; s3Bytes: number; loader: string; otherModelBytes: number };
  /** The user's handler and how the shim calls it. */
  handler: { name: string; form: HandlerForm };
  /** What quantize: dynamic did, with the engine this function's architecture runs it with. */
  quantization: (QuantizationReport & { engine: string }) | null;
  layers: { name: string; role: string; unzippedBytes: number; zippedBytes: number }[];
  /**
   * The tools of this build machine that shaped the layer bytes (they are in the cache key):
   * another machine with other tools builds other bytes, which the framework uploads again.
   */
  buildTools: { strip: string | null; bytecode: string | null };
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
    ['code + shim', formatBytes(report.code.unzippedBytes - report.model.bytes - report.model.otherModelBytes), ''],
    [
      report.model.path ? `model ${report.model.path} (${report.model.loader}${report.quantization?.quantized ? ', int8' : ''}${report.model.s3Bytes ? `; in S3, ${formatBytes(report.model.s3Bytes)} fetched into /tmp` : ''})` : 'model: none',
      formatBytes(report.model.bytes),
      '',
    ],
    ...(report.model.otherModelBytes ? [["other functions' models", formatBytes(report.model.otherModelBytes), '']] : []),
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
    `  ${formatHandler(report.handler)}`,
    `  ${formatBuildTools(report.buildTools)}`,
    ...(report.compression ? [`  ${formatCompression(report.compression, report.target)}`] : []),
    ...(report.quantization ? formatQuantization(report.quantization).map((line) => `  ${line}`) : []),
  ].join('\n');
}

/** How the shim calls the user's handler, said at package time as it decides at cold start. */
export function formatHandler(handler: FunctionReport['handler']): string {
  const name = handler.name.slice(handler.name.lastIndexOf('.') + 1);
  if (handler.form === 'event-context-model') return `handler: ${name}(event, context, model)`;
  if (handler.form === 'event-context') return `handler: ${name}(event, context); the model is serverless_torch.model()`;
  return `handler: ${handler.name} is not a def in its module: its signature decides at cold start (three arguments get the model)`;
}

/** Which tools of this machine the layers depend on, so a user can see why two machines build different layers. */
export function formatBuildTools(tools: FunctionReport['buildTools']): string {
  const strip = tools.strip ? `symbols stripped with ${tools.strip}` : 'symbols kept (no strip tool for the target here)';
  const bytecode = tools.bytecode ? `bytecode compiled by ${tools.bytecode}` : 'no bytecode (no Python of the runtime\'s version here)';
  return `layers built with: ${strip}; ${bytecode} (a machine with other tools builds other layer bytes)`;
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
