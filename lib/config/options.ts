// custom.torch: what the user writes (TorchOptions) and what every stage works with (ResolvedConfig).

export type Loader = 'auto' | 'torchscript' | 'weights' | 'state_dict' | 'pickle' | 'safetensors' | 'export' | 'transformers' | 'custom';

/** A model as the user writes it, in custom.torch.model or functions.X.torch.model. */
export type ModelOption =
  | string
  | false
  | {
      /** The model file or directory, relative to the service. */
      path: string;
      /** How the shim loads it. @default "auto" (from what the file or directory is) */
      loader?: Loader;
      /** "module:function" that builds the nn.Module a state dict (or safetensors) is loaded into. */
      factory?: string;
      /** transformers: the Auto class that loads the directory. @default "AutoModel" */
      class?: string;
      /** transformers: also load a tokenizer with this Auto class (true: AutoTokenizer). @default none */
      tokenizer?: string | boolean;
      /** transformers: also load a processor with this Auto class (true: AutoProcessor). @default none */
      processor?: string | boolean;
      /** custom: "module:function" that receives the path and returns what the handler gets. */
      load?: string;
      /**
       * Where the model travels: in the function zip, or in the deployment bucket, fetched into
       * /tmp at cold start. @default "auto" (the zip when it fits beside the dependencies, else S3)
       */
      store?: ModelStore;
    };

export type ModelStore = 'auto' | 'package' | 's3';
export const MODEL_STORES: ModelStore[] = ['auto', 'package', 's3'];

/** `custom.torch` as the user writes it. */
export interface TorchOptions {
  /** The model every torch function gets unless it names its own; false for none. @default none: each function names its own */
  model?: ModelOption;
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
export const LOADERS: Loader[] = ['auto', 'torchscript', 'weights', 'state_dict', 'pickle', 'safetensors', 'export', 'transformers', 'custom'];

/** A model option resolved: where the model is and how to load it. */
export interface ModelSpec {
  /** Where the option was written, for messages ("custom.torch.model", "functions.embed.torch.model"). */
  option: string;
  /** Absolute path on the build machine. */
  sourcePath: string;
  /** Posix path inside the function package (relative to /var/task). */
  packagePath: string;
  /** A directory (a Hugging Face model, or anything a custom loader reads) rather than a file. */
  isDirectory: boolean;
  loader: Loader;
  factory: string | null;
  /** transformers: the Auto classes of the model and of an optional tokenizer or processor. */
  className: string | null;
  tokenizer: string | null;
  processor: string | null;
  /** custom: the user's load function. */
  load: string | null;
  store: ModelStore;
}

/** The options every stage works with: all resolved, all required. */
export interface ResolvedConfig {
  serviceDir: string;
  /** False when custom.torch is not in serverless.yml: every torch function must then name its model. */
  configured: boolean;
  /** The default model of torch functions; null when there is none (not set, or false). */
  model: ModelSpec | null;
  /** True when custom.torch.model is false: torch functions without their own model get none. */
  noDefaultModel: boolean;
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
