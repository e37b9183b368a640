import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { commitEntry, memo, openCache } from '../../../lib/util/cache';

/** A process id no process has: what a run that was killed leaves in its work directory's name. */
function deadPid(): number {
  for (let pid = 4_000_000; pid > 1; pid--) {
    try {
      process.kill(pid, 0);
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code === 'ESRCH') return pid;
    }
  }
  throw new Error('every process id is in use');
}

describe('cache', () => {
  let root: string;
  beforeEach(() => (root = fs.mkdtempSync(path.join(os.tmpdir(), 'torch-cache-'))));
  afterEach(() => fs.rmSync(root, { recursive: true, force: true }));

  it('removes the work directories of killed runs on this machine and keeps the others', () => {
    const host = createHash('sha256').update(os.hostname()).digest('hex').slice(0, 6);
    const exited = deadPid();
    const work = (name: string) => {
      fs.mkdirSync(path.join(root, 'tmp', name, 'entry'), { recursive: true });
      return name;
    };
    const killed = work(`tree-0123456789abcdef-${host}-${exited}-0a1b2c3d`);
    const running = work(`tree-0123456789abcdef-${host}-${process.pid}-0a1b2c3d`);
    const otherMachine = work(`tree-0123456789abcdef-${host === 'ffffff' ? 'eeeeee' : 'ffffff'}-${exited}-0a1b2c3d`);
    const cache = openCache(root);
    const left = fs.readdirSync(path.join(root, 'tmp'));
    assert.ok(!left.includes(killed), 'the killed run\'s work directory is still there');
    assert.ok(left.includes(running) && left.includes(otherMachine));
    assert.match(path.basename(cache.workDir('layers-x')), new RegExp(`^layers-x-${host}-${process.pid}-[0-9a-f]{8}$`));
  });

  it('an entry appears whole, and a second commit of the same entry keeps the first', () => {
    const cache = openCache(root);
    const first = cache.workDir('a');
    fs.writeFileSync(path.join(first, 'record.json'), '"first"');
    const second = cache.workDir('a');
    fs.writeFileSync(path.join(second, 'record.json'), '"second"');
    commitEntry(first, cache.entry('trees', 'k'));
    commitEntry(second, cache.entry('trees', 'k'));
    assert.equal(fs.readFileSync(path.join(cache.entry('trees', 'k'), 'record.json'), 'utf8'), '"first"');
    assert.ok(!fs.existsSync(second));
  });

  it('memo builds an entry once; the next call reuses its record without building', async () => {
    const cache = openCache(root);
    let builds = 0;
    const build = async (stageDir: string) => {
      builds++;
      fs.writeFileSync(path.join(stageDir, 'data.txt'), 'built');
      return { built: builds };
    };
    const first = await memo({ cache, kind: 'trees', key: 'k1', recordFile: 'r.json', build });
    const second = await memo({ cache, kind: 'trees', key: 'k1', recordFile: 'r.json', build });
    assert.deepEqual([first.reused, second.reused, builds], [false, true, 1]);
    assert.deepEqual(second.record, { built: 1 });
    assert.equal(fs.readFileSync(path.join(second.entryDir, 'data.txt'), 'utf8'), 'built');
    assert.deepEqual(fs.readdirSync(path.join(root, 'tmp')), [], 'the work directory is gone');
  });

  it('memo leaves no entry and no work directory when the build fails', async () => {
    const cache = openCache(root);
    await assert.rejects(
      memo({ cache, kind: 'models', key: 'k2', recordFile: 'r.json', build: async (stageDir) => {
        fs.writeFileSync(path.join(stageDir, 'half.txt'), 'half');
        throw new Error('pip failed');
      } }),
      /pip failed/,
    );
    assert.ok(!fs.existsSync(cache.entry('models', 'k2')));
    assert.deepEqual(fs.readdirSync(path.join(root, 'tmp')), []);
  });

  it('memo rebuilds an entry its reusable check refuses, replacing it', async () => {
    const cache = openCache(root);
    const build = async (stageDir: string) => {
      fs.writeFileSync(path.join(stageDir, 'layer.zip'), 'zip');
      return { file: 'layer.zip' };
    };
    const reusable = (record: { file: string }, dir: string) => fs.existsSync(path.join(dir, record.file));
    const first = await memo({ cache, kind: 'artifacts', key: 'k3', recordFile: 'r.json', reusable, build });
    fs.rmSync(path.join(first.entryDir, 'layer.zip'));
    const second = await memo({ cache, kind: 'artifacts', key: 'k3', recordFile: 'r.json', reusable, build });
    assert.equal(second.reused, false);
    assert.ok(fs.existsSync(path.join(second.entryDir, 'layer.zip')));
  });
});
