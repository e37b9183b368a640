/** One default rule: what it removes and why inference does not need it. */
export interface StripRule {
  id: string;
  reason: string;
  patterns: string[];
}

// Measured with torch 2.13: everything here was removed with import, torch.load (mmap),
// jit.load and quantize_dynamic still working.
export const DEFAULT_RULES: StripRule[] = [
  { id: 'torch-tests', reason: 'C++ test binaries', patterns: ['torch/test/**'] },
  { id: 'package-tests', reason: 'test suites no package imports', patterns: ['**/tests/**'] },
  { id: 'headers', reason: 'C/C++ headers, only for compiling extensions', patterns: ['torch/include/**', '*.h', '*.hpp', '*.cuh'] },
  { id: 'cmake', reason: 'CMake files, only for building against torch', patterns: ['torch/share/**', '*.cmake'] },
  { id: 'torch-tools', reason: 'build and benchmark tools', patterns: ['torch/bin/**'] },
  {
    id: 'test-libraries',
    reason: 'libraries only torch\'s own tests load',
    patterns: ['torch/lib/{libaoti_custom_ops,libbackend_with_compiler,libjitbackend_test,libtorchbind_test}.so'],
  },
  { id: 'type-stubs', reason: 'type stubs, read only by type checkers', patterns: ['*.pyi'] },
  { id: 'foreign-bytecode', reason: 'bytecode compiled for the build machine\'s Python', patterns: ['**/__pycache__/**', '*.pyc'] },
  { id: 'scripts', reason: 'console scripts written for the build machine\'s Python', patterns: ['bin/**'] },
  { id: 'static-libraries', reason: 'static libraries, only for linking', patterns: ['*.a'] },
];

// What `import torch` and model loading cannot do without (measured with torch 2.13: import
// fails without torch_shm_manager, torch/testing or torchgen), and package metadata
// that importlib.metadata reads at run time: a rule that would remove these is refused.
export const PROTECTED = [
  '*.dist-info/**',
  'torch/bin/torch_shm_manager',
  'torch/testing/**',
  'torchgen/**',
  'torch/lib/{libtorch_cpu,libtorch,libtorch_python,libc10,libshm,libtorch_global_deps}.so',
  'torch/lib/libgomp*',
  'torch/_C*.so',
];
