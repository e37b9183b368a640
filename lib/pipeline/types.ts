// The plain data the pipeline takes from the plugin class and hands back to it.
import { FunctionReport } from '../bundle/report';
import { ModelSpec } from '../config/options';
import { UserLayer } from '../bundle/user-layers';

/** A torch function as the plugin reads it from serverless.yml. */
export interface TorchFunction {
  name: string;
  handler: string;
  runtime: string;
  architecture: string;
  memorySize: number;
  /** Layers the user already attaches (function or provider level), in order, measured where they can be. */
  userLayers: UserLayer[];
  ephemeralStorageSize: number | null;
  /** The function's `snapStart` property (python3.12+): init runs once, before a snapshot. */
  snapStart?: boolean;
  /** Files the framework's packager selected, relative to the service directory. */
  files: string[];
  /** Name of the zip: functions packaged together share one. */
  artifactName: string;
  /** Its model (its own, or the service's default); null when it loads none. */
  model: ModelSpec | null;
}

export interface LayerOutput {
  /** Key in service.layers. */
  name: string;
  /** The name Lambda publishes it under (service, stage, role, runtime, architecture). */
  layerName: string;
  artifact: string;
  runtime: string;
  architecture: string;
  description: string;
  bytes: number;
  unzippedBytes: number;
}

export interface FunctionOutput {
  name: string;
  artifact: string;
  handler: string;
  environment: Record<string, string>;
  layers: string[];
  ephemeralStorageSize: number | null;
  /** The object in the deployment bucket the function reads its model from, when the model travels in S3. */
  modelObject: { key: string; size: number } | null;
  report: FunctionReport;
}

export interface PackageOutput {
  functions: FunctionOutput[];
  layers: LayerOutput[];
}
