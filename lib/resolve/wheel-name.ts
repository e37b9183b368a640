import { normaliseProjectName } from '../util/project-name';

/** A wheel file name taken apart (PEP 427): name-version(-build)?-python-abi-platform.whl */
export interface WheelName {
  filename: string;
  project: string;
  version: string;
  pythonTags: string[];
  abiTags: string[];
  platformTags: string[];
}

export function parseWheelName(filename: string): WheelName | null {
  const match = /^([^-]+)-([^-]+)(?:-\d[^-]*)?-([^-]+)-([^-]+)-([^-]+)\.whl$/.exec(filename);
  if (!match) return null;
  return {
    filename,
    project: normaliseProjectName(match[1]),
    version: decodeURIComponent(match[2]),
    pythonTags: match[3].split('.'),
    abiTags: match[4].split('.'),
    platformTags: match[5].split('.'),
  };
}

/** The glibc a manylinux tag needs, or null for tags that name none (any, linux_*). */
export function glibcOfTag(tag: string): [number, number] | null {
  const pep600 = /^manylinux_(\d+)_(\d+)_/.exec(tag);
  if (pep600) return [Number(pep600[1]), Number(pep600[2])];
  if (tag.startsWith('manylinux2014_')) return [2, 17];
  if (tag.startsWith('manylinux2010_')) return [2, 12];
  if (tag.startsWith('manylinux1_')) return [2, 5];
  return null;
}
