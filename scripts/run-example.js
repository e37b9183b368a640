#!/usr/bin/env node
// Package example-service with serverless-torch, invoke its predict function locally
// and check the answer against model/expected.json.
//
//   npm run example                 (builds dist/ first)
//   KEEP_EXAMPLE=1 npm run example  keep the temporary copy of the service
//   EXAMPLE_OFFLINE=1 npm run example  use the local wheel index even when online
//   EXAMPLE_QUANTIZE=1 npm run example package with quantize: dynamic and sampleInput: model/sample.json;
//                                      the report gives size, output difference and latency of float vs int8
//
// It works on a temporary copy, so example-service/ in the repository stays clean.
'use strict';

const fs = require('fs');
const https = require('https');
const os = require('os');
const path = require('path');
const { spawn } = require('child_process');

const REPO = path.resolve(__dirname, '..');
const EXAMPLE = path.join(REPO, 'example-service');
const SERVERLESS = path.join(REPO, 'node_modules', 'serverless', 'bin', 'serverless.js');
const FIXTURE_MODULE = path.join(REPO, 'dist', 'test', 'support', 'wheel-index.js');
const TORCH_INDEX = 'https://download.pytorch.org/whl/cpu/';
const PROBE_TIMEOUT_MS = 5000;
const OFFLINE_RUNTIME = 'python3.11';
const QUANTIZE = process.env.EXAMPLE_QUANTIZE === '1';
// int8 weights move the logits (by about 0.2 on values up to 27 for this model), not the predictions.
const LOGIT_TOLERANCE = QUANTIZE ? 0.5 : 1e-4;

let workDir; // the temporary directory holding the copy
let index; // the local wheel index, offline mode only
let offline = false;

async function main() {
  checkBuilt();
  const copy = makeCopy();
  if (QUANTIZE) {
    enableQuantize(path.join(copy, 'serverless.yml'));
    log('EXAMPLE_QUANTIZE=1: the copy is packaged with quantize: dynamic and sampleInput: model/sample.json.');
  }
  log(`Working on a copy of example-service in ${copy}`);

  let env = {
    ...process.env,
    // No network but the npm registry here: keep the framework from phoning home.
    SLS_TELEMETRY_DISABLED: '1',
    SLS_NOTIFICATIONS_MODE: 'off',
  };

  const forcedOffline = process.env.EXAMPLE_OFFLINE === '1';
  const online = !forcedOffline && (await answers(TORCH_INDEX, PROBE_TIMEOUT_MS));
  if (!online) {
    offline = true;
    const fixture = loadFixtureModule();
    const wheels = await fixture.prepareFixtureWheels();
    index = await fixture.startWheelIndex({
      torchWheels: [wheels.torchWheel, wheels.torchWheelRetagged],
      otherWheels: wheels.dependencyWheels,
    });
    const originalRuntime = rewriteForOffline(path.join(copy, 'serverless.yml'), index);
    env = fixture.pipEnv(env);
    offlineBanner({ forcedOffline, index, wheels, originalRuntime });
  } else {
    log(`${TORCH_INDEX} answers: packaging with the service's own settings.`);
  }
  if (!hasAwsCredentials()) {
    // The framework asks CloudFormation, while packaging, whether each layer is already
    // deployed (to reuse its upload). The example never deploys, so with no credentials that
    // one question is answered "no stack yet" by the stub the tests use.
    env = {
      ...env,
      NODE_OPTIONS: `${env.NODE_OPTIONS ? `${env.NODE_OPTIONS} ` : ''}--require ${path.join(REPO, 'dist', 'test', 'support', 'aws-stub.js')}`,
      SERVERLESS_TORCH_AWS_CLI: 'serverless',
    };
    log('No AWS credentials here: AWS is answered by a local stub (no stack deployed yet); nothing is sent to AWS.');
  }

  await serverless(['package'], copy, env);
  const output = await serverless(['invoke', 'local', '-f', 'predict', '-p', 'event.json'], copy, env, true);

  const result = lastJsonObjectWith(output, 'predictions');
  if (!result) throw new Error('`serverless invoke local` printed no JSON object with "predictions"');
  const expected = JSON.parse(fs.readFileSync(path.join(copy, 'model', 'expected.json'), 'utf8'));
  const problems = compare(result, expected);
  if (problems.length > 0) throw new Error(`the function's answer differs from model/expected.json:\n  ${problems.join('\n  ')}`);
  return `predictions ${JSON.stringify(result.predictions)} match model/expected.json, logits within ${LOGIT_TOLERANCE}`;
}

function checkBuilt() {
  const { main: entry } = JSON.parse(fs.readFileSync(path.join(REPO, 'package.json'), 'utf8'));
  if (!fs.existsSync(path.join(REPO, entry))) {
    throw new Error(`${entry} is missing: run \`npm run build\` first (\`npm run example\` does)`);
  }
}

function makeCopy() {
  workDir = fs.mkdtempSync(path.join(os.tmpdir(), 'serverless-torch-example-'));
  const copy = path.join(workDir, 'example-service');
  fs.cpSync(EXAMPLE, copy, {
    recursive: true,
    // Build output and installed modules of a developer's earlier manual run do not belong in the copy.
    filter: (src) => !/^(node_modules|\.serverless|__pycache__)$/.test(path.basename(src)),
  });
  // The framework resolves plugins from the service's node_modules. A link to the
  // repository (not an npm install) tests the working tree; the plugin's own
  // dependencies then resolve from the repository's node_modules.
  fs.mkdirSync(path.join(copy, 'node_modules'));
  fs.symlinkSync(REPO, path.join(copy, 'node_modules', 'serverless-torch'), 'dir');
  return copy;
}

/** True when `url` gives an HTTP answer below 400 within `timeoutMs`. */
function answers(url, timeoutMs) {
  return new Promise((resolve) => {
    let settled = false;
    const done = (value) => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      req.destroy();
      resolve(value);
    };
    // An overall deadline: a socket timeout alone does not cover a DNS lookup that hangs.
    const timer = setTimeout(() => done(false), timeoutMs);
    const req = https.get(url, (res) => {
      res.resume();
      done(res.statusCode !== undefined && res.statusCode < 400);
    });
    req.on('error', () => done(false));
  });
}

function loadFixtureModule() {
  if (!fs.existsSync(FIXTURE_MODULE)) {
    throw new Error(`${path.relative(REPO, FIXTURE_MODULE)} is missing: run \`npm run build\` first (\`npm run example\` does)`);
  }
  return require(FIXTURE_MODULE);
}

/**
 * Point the copy at the local index. The store holds only a CPython 3.11 torch, so
 * the runtime must be python3.11 for pip to find a wheel at all.
 */
function hasAwsCredentials() {
  if (process.env.AWS_ACCESS_KEY_ID || process.env.AWS_PROFILE) return true;
  const home = os.homedir();
  return ['credentials', 'config'].some((name) => fs.existsSync(path.join(home, '.aws', name)));
}

function rewriteForOffline(file, wheelIndex) {
  // The framework's own YAML parser, resolved the way the framework resolves it.
  const yaml = require(require.resolve('js-yaml', { paths: [path.dirname(require.resolve(SERVERLESS))] }));
  const doc = yaml.load(fs.readFileSync(file, 'utf8'));
  const originalRuntime = doc.provider && doc.provider.runtime;
  doc.provider = { ...doc.provider, runtime: OFFLINE_RUNTIME };
  doc.custom = doc.custom || {};
  doc.custom.torch = {
    ...doc.custom.torch,
    torchIndexUrl: wheelIndex.torchUrl,
    indexUrl: wheelIndex.simpleUrl,
  };
  fs.writeFileSync(file, yaml.dump(doc, { lineWidth: -1, noRefs: true }));
  return originalRuntime;
}

function enableQuantize(file) {
  const yaml = require(require.resolve('js-yaml', { paths: [path.dirname(require.resolve(SERVERLESS))] }));
  const doc = yaml.load(fs.readFileSync(file, 'utf8'));
  doc.custom.torch = { ...doc.custom.torch, quantize: 'dynamic', sampleInput: 'model/sample.json' };
  fs.writeFileSync(file, yaml.dump(doc, { lineWidth: -1, noRefs: true }));
}

function offlineBanner({ forcedOffline, index: wheelIndex, wheels, originalRuntime }) {
  const port = new URL(wheelIndex.torchUrl).port;
  const why = forcedOffline
    ? 'EXAMPLE_OFFLINE=1 is set, so the public indexes are not used.'
    : `${TORCH_INDEX} did not answer within ${PROBE_TIMEOUT_MS / 1000} s.`;
  const lines = [
    'OFFLINE MODE',
    '',
    why,
    `Serving a local mirror of pip's configured wheel store on 127.0.0.1:${port}:`,
    `  torch index  ${wheelIndex.torchUrl}`,
    `  other index  ${wheelIndex.simpleUrl}`,
    `  (files from ${wheels.dir})`,
    `The copy's serverless.yml is changed: runtime ${originalRuntime || '(unset)'} -> ${OFFLINE_RUNTIME},`,
    '  because the store holds only a CPython 3.11 (cp311) torch;',
    '  custom.torch.torchIndexUrl and indexUrl point at the local index.',
    `torch comes from ${path.basename(wheels.torchWheelRetagged)},`,
    '  a re-tagged copy of the manylinux_2_28 wheel so pip accepts it for python3.11',
    "  (glibc 2.26). torch 2.13 really needs glibc 2.28: this package proves the",
    '  packaging and runs under `invoke local` here, but must not be deployed.',
    "Neither it nor pip's default index (PyPI) is used: child processes run with",
    'PIP_CONFIG_FILE=/dev/null and no PIP_* variables, so pip sees only these two.',
  ];
  const width = Math.max(...lines.map((l) => l.length));
  const rule = '='.repeat(width + 4);
  process.stdout.write(`\n${rule}\n${lines.map((l) => `| ${l.padEnd(width)} |`).join('\n')}\n${rule}\n\n`);
}

/** Run the framework in `cwd`; resolves with stdout when `capture` (still echoed), rejects on failure. */
function serverless(args, cwd, env, capture = false) {
  log(`$ serverless ${args.join(' ')}`);
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [SERVERLESS, ...args], {
      cwd,
      env,
      stdio: capture ? ['inherit', 'pipe', 'inherit'] : 'inherit',
    });
    let stdout = '';
    if (capture) {
      child.stdout.on('data', (chunk) => {
        process.stdout.write(chunk);
        stdout += chunk.toString('utf8');
      });
    }
    child.on('error', reject);
    child.on('close', (code, signal) => {
      if (code === 0) resolve(stdout);
      else reject(new Error(`\`serverless ${args.join(' ')}\` failed (${signal ? `signal ${signal}` : `exit ${code}`})`));
    });
  });
}

/**
 * The result is printed as JSON, possibly after log lines, possibly wrapped in an
 * envelope: take the last complete JSON object that has `key`, at any depth.
 */
function lastJsonObjectWith(text, key) {
  // eslint-disable-next-line no-control-regex
  const lines = text.replace(/\x1b\[[0-9;]*m/g, '').split(/\r?\n/);
  for (let start = lines.length - 1; start >= 0; start--) {
    if (!lines[start].trimStart().startsWith('{')) continue;
    for (let end = lines.length - 1; end >= start; end--) {
      if (!lines[end].trimEnd().endsWith('}')) continue;
      let value;
      try {
        value = JSON.parse(lines.slice(start, end + 1).join('\n'));
      } catch {
        continue; // not JSON from here to there: try a shorter span
      }
      const found = findObjectWith(value, key);
      if (found) return found;
    }
  }
  return undefined;
}

function findObjectWith(value, key) {
  if (!value || typeof value !== 'object') return undefined;
  if (!Array.isArray(value) && key in value) return value;
  for (const child of Object.values(value)) {
    const found = findObjectWith(child, key);
    if (found) return found;
  }
  return undefined;
}

function compare(result, expected) {
  const problems = [];
  if (JSON.stringify(result.predictions) !== JSON.stringify(expected.predictions)) {
    problems.push(`predictions ${JSON.stringify(result.predictions)}, expected ${JSON.stringify(expected.predictions)}`);
  }
  const got = result.logits;
  const want = expected.logits;
  if (!Array.isArray(got) || got.length !== want.length) {
    problems.push(`logits for ${Array.isArray(got) ? got.length : 'no'} rows, expected ${want.length}`);
    return problems;
  }
  want.forEach((row, i) => {
    if (!Array.isArray(got[i]) || got[i].length !== row.length) {
      problems.push(`logits[${i}] has ${Array.isArray(got[i]) ? got[i].length : 'no'} values, expected ${row.length}`);
      return;
    }
    row.forEach((value, j) => {
      const diff = Math.abs(got[i][j] - value);
      if (!(diff <= LOGIT_TOLERANCE)) problems.push(`logits[${i}][${j}] = ${got[i][j]}, expected ${value}`);
    });
  });
  return problems;
}

async function cleanUp() {
  if (index) {
    const closing = index;
    index = undefined;
    await closing.close().catch(() => {});
  }
  removeWorkDir();
}

function removeWorkDir() {
  if (!workDir) return;
  if (process.env.KEEP_EXAMPLE === '1') {
    log(`KEEP_EXAMPLE=1: the copy stays in ${workDir}` + (offline ? ' (its index URLs point at a local server that has stopped)' : ''));
  } else {
    fs.rmSync(workDir, { recursive: true, force: true });
  }
  workDir = undefined;
}

function log(message) {
  process.stdout.write(`[example] ${message}\n`);
}

for (const signal of ['SIGINT', 'SIGTERM']) {
  process.once(signal, () => {
    removeWorkDir();
    process.stdout.write(`\nFAIL: interrupted by ${signal}\n`);
    process.exit(signal === 'SIGINT' ? 130 : 143);
  });
}

main().then(
  async (summary) => {
    await cleanUp();
    process.stdout.write(`\nPASS: ${summary}\n`);
  },
  async (err) => {
    await cleanUp();
    process.stdout.write(`\nFAIL: ${err && err.message ? err.message : err}\n`);
    process.exitCode = 1;
  },
);
