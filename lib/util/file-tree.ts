import * as fs from 'node:fs';
import * as path from 'node:path';

/** A file of an installed dependency tree, by its posix path relative to the tree root. */
export interface FileEntry {
  path: string;
  size: number;
  executable: boolean;
}

/** Every regular file below `root`, sorted by path. Symlinks are listed as the files they point to. */
export function listTree(root: string): FileEntry[] {
  const files: FileEntry[] = [];
  const walk = (dir: string, prefix: string) => {
    for (const entry of fs.readdirSync(dir, { withFileTypes: true })) {
      const absolute = path.join(dir, entry.name);
      const relative = prefix ? `${prefix}/${entry.name}` : entry.name;
      if (entry.isDirectory()) {
        walk(absolute, relative);
      } else if (entry.isFile() || entry.isSymbolicLink()) {
        const stat = fs.statSync(absolute);
        if (stat.isDirectory()) {
          walk(absolute, relative);
        } else {
          files.push({ path: relative, size: stat.size, executable: (stat.mode & 0o111) !== 0 });
        }
      }
    }
  };
  walk(root, '');
  return files.sort((a, b) => (a.path < b.path ? -1 : a.path > b.path ? 1 : 0));
}

export function totalBytes(files: { size: number }[]): number {
  return files.reduce((sum, file) => sum + file.size, 0);
}

/** Top-level entry a file belongs to ("torch", "sympy-1.14.0.dist-info", "typing_extensions.py"). */
export function topLevel(relativePath: string): string {
  return relativePath.split('/')[0];
}
