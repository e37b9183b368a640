import * as fs from 'node:fs';
import * as path from 'node:path';
import { FunctionContents, writeFunctionPackage } from '../bundle/function-package';
import { diskFullError, isDiskFull } from '../util/disk-space';
import { Reporter } from '../util/reporter';

export interface FunctionZip {
  path: string;
  bytes: number;
}

/** Writes each function zip into `outputDir`; a full disk is named with what the zip needed. */
export async function zipFunctions(options: {
  contents: Map<string, FunctionContents>;
  outputDir: string;
  reporter: Reporter;
}): Promise<Map<string, FunctionZip>> {
  const { outputDir, reporter } = options;
  fs.mkdirSync(outputDir, { recursive: true });
  const zips = new Map<string, FunctionZip>();
  for (const [artifactName, contents] of options.contents) {
    reporter.progress(`Zipping function package ${artifactName}`);
    try {
      const result = await writeFunctionPackage(path.join(outputDir, artifactName), contents);
      zips.set(artifactName, { path: result.path, bytes: result.bytes });
    } catch (error) {
      if (!isDiskFull(error)) throw error;
      throw diskFullError({ dir: outputDir, step: `zipping ${artifactName}`, neededBytes: contents.unzippedBytes, neededFor: `${artifactName} at most`, holds: 'artifacts', cause: error });
    }
  }
  return zips;
}
