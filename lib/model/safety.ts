import { TorchError } from '../util/errors';
import { PackagedLoader } from './inspect';
import { compareReleases, releaseOf } from '../resolve/version';

/** A published flaw that lets a crafted checkpoint run code through torch.load(weights_only=True). */
export interface WeightsOnlyBypass {
  cve: string;
  /** First torch release without it. */
  fixedIn: string;
  effect: string;
}

export const WEIGHTS_ONLY_BYPASSES: WeightsOnlyBypass[] = [
  { cve: 'CVE-2025-32434', fixedIn: '2.6.0', effect: 'remote code execution through torch.load(weights_only=True)' },
  { cve: 'CVE-2026-24747', fixedIn: '2.10.0', effect: 'memory corruption and code execution in the weights-only unpickler' },
];

/** The bypasses a torch version still has ("2.5.1+cpu" has both). */
export function knownBypasses(torchVersion: string): WeightsOnlyBypass[] {
  const release = releaseOf(torchVersion);
  return WEIGHTS_ONLY_BYPASSES.filter((bypass) => compareReleases(release, releaseOf(bypass.fixedIn)) < 0);
}

/**
 * Loaders that go through torch.load on pickled weights (`pickledWeights`: weights, state_dict,
 * pickle, and transformers on a directory without safetensors weights). On a torch with a
 * weights-only bypass they no longer keep a crafted file from running code, and `pickle` runs it
 * on any version: they need the user to vouch for the model file there. `torchscript`
 * (torch.jit.load) and `export` load programs and were never a safe path for untrusted files on
 * any version (CVE-2025-32434 made the weights-only load fall through to torch.jit.load), so the
 * torch version does not change what they risk. safetensors files hold no pickle at all; a
 * `custom` loader is the user's own code.
 */
export interface LoaderSafety {
  /** Set when packaging must stop. */
  refusal: TorchError | null;
  /** Said at package time even when packaging goes on. */
  warnings: string[];
}

/** Whether the model may be packaged with this loader for this torch, and what the user must hear. */
export function checkLoaderSafety(options: {
  loader: PackagedLoader;
  /** Whether loading runs torch.load on pickled weights (lib/model/inspect.ts loadsPickledWeights). */
  pickledWeights: boolean;
  torchVersion: string;
  allowUnsafeTorch: boolean;
  modelPath: string;
}): LoaderSafety {
  const { loader, pickledWeights, torchVersion, allowUnsafeTorch, modelPath } = options;
  const warnings: string[] = [];
  if (loader === 'pickle') {
    warnings.push(
      `custom.torch.model.loader is "pickle": every cold start runs torch.load(weights_only=False) on ${modelPath}, ` +
        'which executes whatever code the file holds. Package only files you made or trust; a state dict ' +
        '(loader: state_dict with a factory) cannot run code.',
    );
  }
  const bypasses = pickledWeights ? knownBypasses(torchVersion) : [];
  if (bypasses.length === 0) return { refusal: null, warnings };
  const named = bypasses.map((bypass) => `${bypass.cve} (${bypass.effect}, fixed in ${bypass.fixedIn})`).join(' and ');
  const newest = bypasses.map((bypass) => bypass.fixedIn).sort((a, b) => compareReleases(releaseOf(b), releaseOf(a)))[0];
  if (allowUnsafeTorch) {
    warnings.push(
      `torch ${torchVersion} has ${named}; custom.torch.allowUnsafeTorch is true, so ${modelPath} is loaded with it ` +
        `(loader ${loader}) on the promise that the file is trusted.`,
    );
    return { refusal: null, warnings };
  }
  return {
    refusal: new TorchError(
      'TORCH_UNSAFE_TORCH_VERSION',
      `torch ${torchVersion} has ${named}: with loader ${loader}, a crafted ${modelPath} could run code in your function. ` +
        `Use torch ${newest} or newer (on python3.12 or later), save the model as TorchScript (loader: torchscript), or, if ` +
        'you made the model file yourself or otherwise trust it, set custom.torch.allowUnsafeTorch: true.',
    ),
    warnings,
  };
}
