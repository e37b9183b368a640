// What a function that reads its model from S3 needs in the template, as plain data: the
// bucket (the framework's deployment bucket, or the one provider.deploymentBucket names) and an
// IAM statement for s3:GetObject on the model's key only.

/** provider.deploymentBucket as serverless.yml gives it: a name, or { name, ... }. */
export function deploymentBucketName(deploymentBucket: unknown): string | null {
  if (typeof deploymentBucket === 'string' && deploymentBucket) return deploymentBucket;
  const name = (deploymentBucket as { name?: unknown } | null | undefined)?.name;
  return typeof name === 'string' && name ? name : null;
}

/** The bucket for the function's environment: the configured name, or a Ref to the framework's bucket. */
export function bucketReference(deploymentBucket: unknown): string | { Ref: string } {
  return deploymentBucketName(deploymentBucket) ?? { Ref: 'ServerlessDeploymentBucket' };
}

/** The one permission a function needs to read its model, on that object only. */
export function modelReadStatement(bucket: string | { Ref: string }, key: string): Record<string, unknown> {
  return {
    Effect: 'Allow',
    Action: ['s3:GetObject'],
    Resource: [{ 'Fn::Join': ['', ['arn:', { Ref: 'AWS::Partition' }, ':s3:::', bucket, `/${key}`]] }],
  };
}

/**
 * Whether the framework generates the role of this function (the statement can be added to it)
 * or the user gives one (provider.iam.role as a name or ARN, provider.role, functions.X.role).
 */
export function usesOwnRole(provider: { iam?: { role?: unknown }; role?: unknown }, fn: { role?: unknown }): boolean {
  return fn.role !== undefined || provider.role !== undefined || (provider.iam?.role !== undefined && typeof provider.iam.role !== 'object');
}
