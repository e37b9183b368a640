// custom.torch: what the user writes (TorchOptions) and what every stage works with (ResolvedConfig).

export type Loader = 'auto' | 'torchscript' | 'weights' | 'state_dict' | 'pickle';

/** `custom.torch` as the user writes it. */
export interface TorchOptions {
  /** The model file, or its path with how to load it. Required. */
  model: string | { path: string; loader?: Loader; factory?: string };
  /** A pip requirements file. @default "requirements.txt" when that file exists */
  requirements?: string | false;
  /** The torch version when the requirements do not pin one. @default the newest the index has for the target */
  torchVersion?: string;
  /** Where torch comes from. @default "https://download.pytorch.org/whl/cpu" (CPU-only builds) */
  torchIndexUrl?: string;
  /** The index for every other requirement. @default pip's own configuration */
  indexUrl?: string;
  /** The interpreter on the build machine that runs pip. @default "python3" */
  python?: string;
  /** What to strip from the installed tree beyond the defaults. */
  strip?: { keep?: string[]; remove?: string[]; symbols?: boolean };
  /** Where resolved trees and built layers are kept between runs. @default "$XDG_CACHE_HOME/serverless-torch" or "~/.cache/serverless-torch" */
  cacheDir?: string;
  /** Ship the model with dynamic int8 quantization of its Linear, LSTM and GRU layers. @default false */
  quantize?: false | 'dynamic';
  /** A JSON file holding an input the model accepts, to measure what quantization changes. @default none */
  sampleInput?: string;
  /**
   * Package a model loaded through torch.load with a torch that has a known weights-only bypass
   * (torch < 2.10, see lib/model/safety.ts): only for model files you made or trust. @default false
   */
  allowUnsafeTorch?: boolean;
}

export const DEFAULT_TORCH_INDEX_URL = 'https://download.pytorch.org/whl/cpu';
export const LOADERS: Loader[] = ['auto', 'torchscript', 'weights', 'state_dict', 'pickle'];

/** The options every stage works with: all resolved, all required. */
export interface ResolvedConfig {
  serviceDir: string;
  model: {
    /** Absolute path on the build machine. */
    sourcePath: string;
    /** Posix path inside the function package (relative to /var/task). */
    packagePath: string;
    loader: Loader;
    factory: string | null;
  };
  requirementsPath: string | null;
  torchVersion: string | null;
  torchIndexUrl: string;
  indexUrl: string | null;
  python: string;
  strip: { keep: string[]; remove: string[]; symbols: boolean };
  cacheDir: string;
  quantize: false | 'dynamic';
  /** Absolute path of the sample input file, or null. */
  sampleInput: string | null;
  allowUnsafeTorch: boolean;
}
