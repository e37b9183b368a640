import assert from 'node:assert/strict';
import { unsafeClasses } from '../../../lib/model/format';
import { scanLegacyCheckpoint, scanPickle } from '../../../lib/model/pickle-globals';

// Written by CPython's pickle: [net.Net(), net.Block()] with protocol 4 (the second STACK_GLOBAL
// takes "net" from the memo), an OrderedDict with protocol 4, net.Net() with protocol 0, and a
// legacy torch.save head (magic number, protocol version, system info, then the object) whose
// object holds a net.Net, followed by storage bytes.
const PROTOCOL_4_MODULES = Buffer.from('80049525000000000000005d94288c036e6574948c034e657494939429819468018c05426c6f636b949394298194652e', 'hex');
const PROTOCOL_4_CONTAINER = Buffer.from('80049529000000000000008c0b636f6c6c656374696f6e73948c0b4f726465726564446963749493942952948c0161944b01732e', 'hex');
const PROTOCOL_0_MODULE = Buffer.from('63636f70795f7265670a5f7265636f6e7374727563746f720a70300a28636e65740a4e65740a70310a635f5f6275696c74696e5f5f0a6f626a6563740a70320a4e7470330a5270340a2e', 'hex');
const LEGACY_CHECKPOINT = Buffer.from(
  '80028a0a6cfc9c46f9206aa850192e80024de9032e80027d710028581000000070726f746f636f6c5f76657273696f6e71014de903580d0000006c6974746c655f656e6469616e710288752e800263636f6c6c656374696f6e730a4f726465726564446963740a7100295271015801000000777102636e65740a4e65740a710329817104732e000102000102000102000102000102000102000102000102000102000102',
  'hex',
);

describe('the globals a pickle names, read without running it', () => {
  it('finds classes named through STACK_GLOBAL (protocol 4), including a module string taken from the memo', () => {
    assert.deepEqual(scanPickle(PROTOCOL_4_MODULES).globals, ['net.Net', 'net.Block']);
    assert.deepEqual(unsafeClasses(scanPickle(PROTOCOL_4_MODULES).globals), ['net.Net', 'net.Block']);
  });

  it('finds classes named inline (protocol 0 GLOBAL), and lets containers through', () => {
    assert.deepEqual(unsafeClasses(scanPickle(PROTOCOL_0_MODULE).globals), ['copy_reg._reconstructor', 'net.Net']);
    assert.deepEqual(unsafeClasses(scanPickle(PROTOCOL_4_CONTAINER).globals), []);
  });

  it('reads the object of a legacy (non-zip) torch.save file past the header pickles', () => {
    assert.deepEqual(unsafeClasses(scanLegacyCheckpoint(LEGACY_CHECKPOINT)), ['net.Net']);
  });

  it('refuses bytes that are not a pickle', () => {
    assert.throws(() => scanPickle(Buffer.from('PK\x03\x04 not a pickle')), /not a pickle/);
    assert.throws(() => scanPickle(PROTOCOL_4_MODULES.subarray(0, 20)), /not a pickle/);
  });
});
