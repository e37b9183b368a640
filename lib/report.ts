import { formatBytes } from './format';
import { UNZIPPED_LIMIT } from './layer-plan';
import { FunctionReport } from './package-service';

function row(cells: string[], widths: number[]): string {
  return cells.map((cell, index) => (index === 0 ? cell.padEnd(widths[index]) : cell.padStart(widths[index]))).join('  ');
}

/** The table shown after packaging: what each function weighs against Lambda's limits. */
export function formatReport(report: FunctionReport): string {
  const percent = (bytes: number) => `${((bytes / UNZIPPED_LIMIT) * 100).toFixed(0)}%`;
  const lines: string[][] = [
    ['part', 'unzipped', 'zipped'],
    ['code + shim', formatBytes(report.code.unzippedBytes - report.model.bytes), ''],
    [`model (${report.model.loader})`, formatBytes(report.model.bytes), ''],
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
  ].join('\n');
}
