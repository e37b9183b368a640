import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { diskFullError, fullestDirectory, isDiskFull } from '../../../lib/util/disk-space';
import { knownPipFailure, pipFailure, requirementsProblem } from '../../../lib/resolve/pip-failure';

// What pip 23.2 prints, captured on this machine (addresses and digests shortened where irrelevant).
const REFUSED = `Looking in indexes: http://127.0.0.1:40665/whl/cpu/
WARNING: Retrying (Retry(total=4, connect=None, read=None, redirect=None, status=None)) after connection broken by 'NewConnectionError('<pip._vendor.urllib3.connection.HTTPConnection object at 0x7f3e2c1b5d50>: Failed to establish a new connection: [Errno 111] Connection refused')': /whl/cpu/torch/
ERROR: Could not find a version that satisfies the requirement torch==2.13.0 (from versions: none)
ERROR: No matching distribution found for torch==2.13.0`;

const MISMATCH = `ERROR: THESE PACKAGES DO NOT MATCH THE HASHES FROM THE REQUIREMENTS FILE. If you have updated the package versions, please update the hashes. Otherwise, examine the package contents carefully; someone may have tampered with them.
    sympy>=1.13.3 from http://127.0.0.1:35813/simple/sympy-1.14.0-py3-none-any.whl#sha256=${'8'.repeat(64)} (from torch==2.13.0+cpu->-r /cache/tmp/tree-x/requirements.txt (line 1)):
        Expected sha256 ${'8'.repeat(64)}
             Got        ${'e'.repeat(64)}
`;

const NO_SPACE = `Collecting torch==2.13.0
  Downloading http://127.0.0.1:39349/whl/cpu/torch-2.13.0%2Bcpu-cp311-cp311-manylinux_2_17_x86_64.manylinux2014_x86_64.whl (191.8 MB)
ERROR: Could not install packages due to an OSError: [Errno 28] No space left on device: '/nonexistent-pip-temp/pip-unpack-38x06v5y/torch.whl'
`;

const UNPINNED = `ERROR: In --require-hashes mode, all requirements must have their versions pinned with ==. These do not:
    MarkupSafe>=2.0 from file:///wheels/markupsafe-3.0.3-cp311-cp311-manylinux_2_17_x86_64.whl (from jinja2==3.1.6->-r /cache/tmp/tree-x/requirements.txt (line 1))
`;

describe('reading pip\'s failures', () => {
  it('a refused connection is TORCH_INDEX_UNREACHABLE with the reason, even though pip also says "no matching distribution"', () => {
    const error = knownPipFailure('download torch', 'http://127.0.0.1:40665/whl/cpu/', REFUSED);
    assert.equal(error?.code, 'TORCH_INDEX_UNREACHABLE');
    assert.match(error!.message, /could not reach http:\/\/127\.0\.0\.1:40665\/whl\/cpu\/ to download torch: \[Errno 111\] Connection refused\./);
  });

  it('a hash mismatch names the file, its URL and both digests', () => {
    const error = knownPipFailure('install the requirements', 'http://127.0.0.1:35813/simple/', MISMATCH);
    assert.equal(error?.code, 'TORCH_WHEEL_HASH_MISMATCH');
    assert.match(error!.message, new RegExp(`pip refused sympy-1\\.14\\.0-py3-none-any\\.whl from http://127\\.0\\.0\\.1:35813/simple/sympy-1\\.14\\.0-py3-none-any\\.whl \\(asked to install the requirements\\): expected sha256 ${'8'.repeat(64)}, got ${'e'.repeat(64)}\\.`));
  });

  it('a full disk names the directory that filled up, not pip\'s temporary file on another disk, and what is needed', () => {
    const full = fs.mkdtempSync(path.join(os.tmpdir(), 'torch-full-'));
    try {
      // Here both paths are on one disk, so either names it; the e2e test puts the cache on a tmpfs of its own.
      const error = knownPipFailure('download torch', 'http://127.0.0.1:39349/whl/cpu/', NO_SPACE, full);
      assert.equal(error?.code, 'TORCH_DISK_FULL');
      assert.match(error!.message, /No space left on the disk holding \S+ while pip tried to download torch \(.* free there now\)\. It needs about 914\.6 MiB \(959000000 bytes\) free there for the 191\.8 MB torch wheel/);
    } finally {
      fs.rmSync(full, { recursive: true, force: true });
    }
  });

  it('anything else keeps pip\'s last lines under TORCH_PIP_FAILED', () => {
    const error = pipFailure('download torch', 'http://index/', 'Traceback (most recent call last):\nUnicodeDecodeError: bad byte');
    assert.equal(error.code, 'TORCH_PIP_FAILED');
    assert.match(error.message, /UnicodeDecodeError: bad byte/);
  });

  it('an invalid requirement is pointed at the line of the user\'s file, with pip\'s hint', () => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'torch-reqs-'));
    try {
      const file = path.join(dir, 'requirements.txt');
      fs.writeFileSync(file, 'torch==2.13.0\n\nsympy=1.14.0\n');
      const output = "ERROR: Invalid requirement: 'sympy=1.14.0' (from line 1 of /cache/tmp/tree-x/requirements.txt)\nHint: = is not a valid operator. Did you mean == ?\n";
      const error = requirementsProblem(output, file);
      assert.equal(error?.code, 'TORCH_REQUIREMENTS_INVALID');
      assert.match(error!.message, /^requirements\.txt line 3: "sympy=1\.14\.0" is not a valid requirement \(pip: = is not a valid operator\. Did you mean == \?\)\. Fix that line/);
    } finally {
      fs.rmSync(dir, { recursive: true, force: true });
    }
  });

  it('hash mode with an unpinned dependency says which and how to fix it', () => {
    const error = requirementsProblem(UNPINNED, '/svc/requirements.txt');
    assert.equal(error?.code, 'TORCH_REQUIREMENTS_INVALID');
    assert.match(error!.message, /requirements\.txt uses --hash pins.*Missing: MarkupSafe>=2\.0\. Add those lines/);
  });
});

describe('full disks', () => {
  it('knows ENOSPC from Node and "No space left on device" from a child process', () => {
    assert.ok(isDiskFull(Object.assign(new Error('write failed'), { code: 'ENOSPC' })));
    assert.ok(isDiskFull('OSError: [Errno 28] No space left on device'));
    assert.ok(!isDiskFull(new Error('EACCES')));
  });

  it('picks the candidate on the fullest file system and says what to do for the cache and for .serverless/', () => {
    assert.equal(fullestDirectory([null, os.tmpdir()]), os.tmpdir());
    const cache = diskFullError({ dir: os.tmpdir(), step: 'zipping', neededBytes: 2048, neededFor: 'two files' });
    assert.equal(cache.code, 'TORCH_DISK_FULL');
    assert.match(cache.message, /while zipping \(.* free there now\)\. It needs about 2\.0 KiB \(2048 bytes\) free there for two files\. .*custom\.torch\.cacheDir/);
    const artifacts = diskFullError({ dir: os.tmpdir(), step: 'zipping', neededBytes: null, holds: 'artifacts' });
    assert.match(artifacts.message, /the artifacts go to the \.serverless\/ directory/);
    assert.doesNotMatch(artifacts.message, /cacheDir/);
  });
});
