import * as fs from 'node:fs';
import * as path from 'node:path';
import { MODELS_INDEX, StoredObject } from '../pipeline/store-models';
import { formatBytes, formatSeconds } from '../util/format';
import { Reporter } from '../util/reporter';
import { S3Request, uploadModel } from './upload-model';

/** The models a package put aside for the deployment bucket (serverless-torch-models.json), or none. */
export function storedObjects(packageDir: string): StoredObject[] {
  const index = path.join(packageDir, MODELS_INDEX);
  return fs.existsSync(index) ? (JSON.parse(fs.readFileSync(index, 'utf8')) as StoredObject[]) : [];
}

/**
 * Uploads each model the package stored for S3, unless the bucket has it already: the key names
 * the content, so an unchanged model is never uploaded twice.
 */
export async function uploadStoredModels(options: {
  packageDir: string;
  request: S3Request;
  bucket: string;
  /** Extra putObject/createMultipartUpload parameters: the deployment bucket's encryption. */
  objectParams?: Record<string, unknown>;
  reporter: Reporter;
}): Promise<{ uploaded: StoredObject[]; present: StoredObject[] }> {
  const { packageDir, request, bucket, reporter } = options;
  const uploaded: StoredObject[] = [];
  const present: StoredObject[] = [];
  for (const object of storedObjects(packageDir)) {
    const started = Date.now();
    const result = await uploadModel({
      request,
      bucket,
      key: object.key,
      file: path.join(packageDir, object.file),
      size: object.size,
      objectParams: options.objectParams,
      onProgress: (done, total) => reporter.progress(`Uploading ${path.posix.basename(object.key)} to s3://${bucket}: ${formatBytes(done)} of ${formatBytes(total)}`),
    });
    if (result.uploaded) {
      uploaded.push(object);
      reporter.info(`Model uploaded to s3://${bucket}/${object.key} (${formatBytes(object.size)} in ${formatSeconds(Date.now() - started)})`);
    } else {
      present.push(object);
      reporter.verbose(`Model s3://${bucket}/${object.key} is there already (${formatBytes(object.size)}): not uploaded again`);
    }
  }
  return { uploaded, present };
}
