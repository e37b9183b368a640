import * as fs from 'node:fs';
import * as path from 'node:path';
import { PackagedModel, S3Object } from '../model/inspect';
import { formatBytes } from '../util/format';
import { sha256File } from '../util/hash';
import { Reporter } from '../util/reporter';
import { writeZip } from '../zip/write';

/** Where the models that travel in S3 wait in .serverless/ for the deploy, and the list of them. */
export const MODELS_DIR = 'serverless-torch-models';
export const MODELS_INDEX = 'serverless-torch-models.json';
/** The prefix of their keys in the deployment bucket. */
export const MODELS_PREFIX = 'serverless-torch/models';

/** A model object the deploy uploads (serverless-torch-models.json). */
export interface StoredObject {
  key: string;
  /** The file to upload, relative to the package directory. */
  file: string;
  size: number;
  sha256: string;
}

/** The object of one model: its file, or a directory as one stored zip of its files. */
async function objectOf(model: PackagedModel, outputDir: string): Promise<{ object: S3Object; local: string }> {
  const { manifest, source } = model;
  const staging = path.join(outputDir, MODELS_DIR, '.staging');
  fs.mkdirSync(staging, { recursive: true });
  let local: string;
  let file = path.posix.basename(manifest.path);
  if (manifest.kind === 'directory') {
    file = `${file}.zip`;
    // Stored, not deflated: weights barely compress, and the shim unpacks it at the speed of a copy.
    const written = await writeZip(
      path.join(staging, file),
      Object.keys(manifest.files ?? {}).map((name) => ({ name, source: { path: path.join(source, ...name.split('/')) }, compress: false })),
    );
    local = written.path;
  } else {
    local = path.join(staging, file);
    fs.copyFileSync(source, local);
  }
  const sha256 = await sha256File(local);
  const size = fs.statSync(local).size;
  const final = path.join(outputDir, MODELS_DIR, sha256, file);
  fs.mkdirSync(path.dirname(final), { recursive: true });
  fs.renameSync(local, final);
  return { object: { key: `${MODELS_PREFIX}/${sha256}/${file}`, size, sha256, file, archive: manifest.kind === 'directory' }, local: final };
}

/**
 * Puts each model that travels in S3 into `outputDir` under its content-addressed name, with the
 * list the deploy uploads from; its manifest entry gets the object, its zips only the entry.
 */
export async function storeModels(options: {
  packaged: Map<string, PackagedModel>;
  inS3: Set<string>;
  outputDir: string;
  reporter: Reporter;
}): Promise<Map<string, PackagedModel>> {
  const { outputDir, reporter } = options;
  const stored = new Map<string, PackagedModel>();
  const objects: StoredObject[] = [];
  for (const [id, model] of options.packaged) {
    if (!options.inS3.has(id)) {
      stored.set(id, model);
      continue;
    }
    reporter.progress(`Storing ${model.manifest.path} for the deployment bucket`);
    const { object, local } = await objectOf(model, outputDir);
    objects.push({ key: object.key, file: path.relative(outputDir, local).split(path.sep).join('/'), size: object.size, sha256: object.sha256 });
    reporter.verbose(`Model ${model.manifest.path}: ${formatBytes(object.size)} to the deployment bucket at ${object.key}`);
    stored.set(id, { ...model, inS3: true, manifest: { ...model.manifest, s3: object } });
  }
  fs.rmSync(path.join(outputDir, MODELS_DIR, '.staging'), { recursive: true, force: true });
  if (objects.length) fs.writeFileSync(path.join(outputDir, MODELS_INDEX), JSON.stringify(objects, null, 1));
  return stored;
}
