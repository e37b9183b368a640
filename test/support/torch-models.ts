/**
 * Real models for the quantization tests, built with the real torch 2.13.0 through the plugin's
 * own host-torch install (so a test run installs torch for the host once, into TEST_CACHE, and
 * the packaging under test then finds it cached).
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import { openCache } from '../../lib/util/cache';
import { resolveConfig } from '../../lib/config/resolve-config';
import { HostTorch, ensureHostTorch, hostPythonArgs } from '../../lib/model/host-torch';
import { Runner, runProcess } from '../../lib/util/process';
import { silentReporter } from '../../lib/util/reporter';
import { TEST_CACHE } from './sls';
import { TORCH_VERSION, WheelIndex, pipEnv } from './wheel-index';

export const HOST_PYTHON = 'python3.11';

/** runProcess with pip seeing only the indexes named on its command line. */
export const isolatedRunner: Runner = (command, args, options = {}) => runProcess(command, args, { ...options, env: pipEnv() });

let hostTorch: Promise<HostTorch> | null = null;

export function testHostTorch(index: WheelIndex): Promise<HostTorch> {
  if (!hostTorch) {
    const serviceDir = fs.mkdtempSync(path.join(TEST_CACHE, 'host-torch-service-'));
    fs.writeFileSync(path.join(serviceDir, 'model.pt'), '');
    const config = resolveConfig(
      { model: 'model.pt', python: HOST_PYTHON, torchIndexUrl: index.torchUrl, indexUrl: index.simpleUrl, cacheDir: TEST_CACHE, requirements: false },
      serviceDir,
    );
    hostTorch = ensureHostTorch({ config, torchVersion: `${TORCH_VERSION}+cpu`, cache: openCache(TEST_CACHE), runner: isolatedRunner, reporter: silentReporter });
  }
  return hostTorch;
}

/** Runs Python code with the host torch and `cwd` importable (as the service is to the plugin); returns stdout. */
export async function runWithTorch(host: HostTorch, cwd: string, code: string): Promise<string> {
  const prelude = `import sys, warnings\nsys.path[:0] = ${JSON.stringify([cwd, ...(host.sitePath ? [host.sitePath] : [])])}\nwarnings.simplefilter("ignore")\n`;
  const result = await runProcess(host.python, [...hostPythonArgs(host), '-c', prelude + code], { cwd });
  if (result.code !== 0) throw new Error(`python failed (${result.code}):\n${result.stderr}`);
  return result.stdout;
}

/** Architectures of the test models, in a module the factories and pickles refer to. */
export const MODELS_PY = `import torch
from torch import nn


class MLP(nn.Module):
    """Linear-heavy: what dynamic quantization is for."""

    def __init__(self):
        super().__init__()
        self.a = nn.Linear(256, 512)
        self.b = nn.Linear(512, 512)
        self.c = nn.Linear(512, 10)

    def forward(self, x):
        return self.c(torch.relu(self.b(torch.relu(self.a(x)))))


class LSTMNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.lstm = nn.LSTM(32, 128, num_layers=2, batch_first=True)
        self.head = nn.Linear(128, 4)

    def forward(self, x):
        out, _ = self.lstm(x)
        return self.head(out[:, -1])


class ConvNet(nn.Module):
    """Only convolutions: nothing dynamic quantization touches."""

    def __init__(self):
        super().__init__()
        self.c1 = nn.Conv2d(1, 8, 3)
        self.c2 = nn.Conv2d(8, 4, 3)

    def forward(self, x):
        return self.c2(torch.relu(self.c1(x))).mean(dim=(2, 3))


def mlp():
    return MLP()


def lstm():
    return LSTMNet()


def conv():
    return ConvNet()
`;

/**
 * Writes models.py and, for each of mlp, lstm and conv: <name>.pt (state dict), <name>.ts.pt
 * (TorchScript), <name>.pickle.pt (the whole module) and <name>.json (a sample input).
 */
export async function writeTestModels(host: HostTorch, dir: string): Promise<void> {
  fs.writeFileSync(path.join(dir, 'models.py'), MODELS_PY);
  await runWithTorch(
    host,
    dir,
    `import json, torch, models
torch.manual_seed(0)
for name, build, shape in (("mlp", models.mlp, (4, 256)), ("lstm", models.lstm, (2, 7, 32)), ("conv", models.conv, (2, 1, 12, 12))):
    m = build().eval()
    torch.save(m.state_dict(), name + ".pt")
    torch.jit.save(torch.jit.script(m), name + ".ts.pt")
    torch.save(m, name + ".pickle.pt")
    with open(name + ".json", "w") as f:
        json.dump(torch.randn(*shape).tolist(), f)
`,
  );
}
