/**
 * Minimal valid wheels made by the tests, for resolution tests that need a project under a
 * name, version and platform tag the local wheel store does not have (a torch for another
 * Python or architecture). pip installs them like any wheel; nothing in them is meant to run.
 */
import * as path from 'node:path';
import { writeZip } from '../../lib/zip/write';

export async function makeWheel(options: {
  dir: string;
  project: string;
  version: string;
  /** "cp310-cp310-manylinux_2_17_x86_64" */
  tag: string;
  /** Files inside the wheel, relative to site-packages. @default a package __init__.py */
  files?: Record<string, string>;
  /** Requires-Dist lines. */
  requires?: string[];
}): Promise<string> {
  const { project, version, tag } = options;
  const distInfo = `${project}-${version}.dist-info`;
  const files = options.files ?? { [`${project}/__init__.py`]: '' };
  const metadata = ['Metadata-Version: 2.1', `Name: ${project}`, `Version: ${version}`, ...(options.requires ?? []).map((line) => `Requires-Dist: ${line}`)].join('\n') + '\n';
  const wheel = ['Wheel-Version: 1.0', 'Generator: serverless-torch tests', 'Root-Is-Purelib: false', `Tag: ${tag}`].join('\n') + '\n';
  const all: Record<string, string> = { ...files, [`${distInfo}/METADATA`]: metadata, [`${distInfo}/WHEEL`]: wheel };
  const record = [...Object.keys(all), `${distInfo}/RECORD`].map((name) => `${name},,`).join('\n') + '\n';
  all[`${distInfo}/RECORD`] = record;
  const file = path.join(options.dir, `${project}-${encodeURIComponent(version).replace(/%2B/g, '+')}-${tag}.whl`);
  await writeZip(file, Object.entries(all).map(([name, content]) => ({ name, source: { data: Buffer.from(content) } })));
  return file;
}
