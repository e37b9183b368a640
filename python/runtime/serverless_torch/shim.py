"""Lambda handler: `serverless_torch.shim.handler`.

Importing this module is the function's init phase: it unpacks the compressed
dependencies, imports torch, loads the model once and imports the user's handler,
so that every invocation only runs `user_handler(event, context, model)`.
"""

import hashlib
import importlib
import json
import os
import platform
import sys
import time
import warnings
from typing import Any, Callable, Dict, Optional

from serverless_torch import unpack as _unpack

# Seconds each init phase took in this sandbox (unpack, import, load, handler), for the init
# line and for bench/cold-start.
INIT_TIMINGS: Dict[str, float] = {}

# Lambda sets this while it runs the init whose memory and /tmp a SnapStart snapshot captures.
SNAP_START_INIT = "snap-start"


class InitError(RuntimeError):
    """The packaged function is inconsistent; `code` names the failure."""

    def __init__(self, code: str, message: str) -> None:
        super(InitError, self).__init__(message)
        self.code = code


def torch_threads(memory_mb: Optional[str], cpus: int) -> int:
    """Lambda grants one vCPU per 1,769 MB; more threads than that only contend."""
    return _unpack.vcpus(memory_mb, cpus)


def verifies_model() -> bool:
    """Whether the model's sha256 is checked at init. Not on Lambda itself (the runtime API is
    there): Lambda checks the function zip it unpacks into a read-only /var/task, and hashing a
    large model would only add to every cold start (README "Performance"). Everywhere else (invoke
    local, tests) the file could have changed since packaging, and it is checked."""
    return not os.environ.get("AWS_LAMBDA_RUNTIME_API")


def _put_after_task_root(path: str, task_root: str) -> None:
    root = os.path.abspath(task_root)
    for i, entry in enumerate(sys.path):
        if entry and os.path.abspath(entry) == root:
            sys.path.insert(i + 1, path)
            break
    else:
        sys.path.insert(0, path)
    importlib.invalidate_caches()


def _sha256(path: str) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while True:
            block = f.read(1 << 20)
            if not block:
                return digest.hexdigest()
            digest.update(block)


def _weights_only_load(torch: Any, path: str) -> Any:
    try:
        return torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except (RuntimeError, TypeError) as e:
        # Legacy (non-zip) checkpoints, and torch < 2.1, cannot be memory-mapped.
        if "mmap" not in str(e):
            raise
    return torch.load(path, map_location="cpu", weights_only=True)


def _factory(spec: Any) -> Callable[[], Any]:
    module_name, _, attr = (spec or "").partition(":")
    if not module_name or not attr:
        raise InitError(
            "TORCH_BAD_FACTORY",
            "model factory %r is not of the form 'package.module:function'" % (spec,),
        )
    target: Any = importlib.import_module(module_name)
    for name in attr.split("."):
        target = getattr(target, name)
    return target


def quantized_engine(quantized: Dict[str, Any], machine: str) -> Optional[str]:
    """The quantized engine manifest.json names for this machine; None keeps torch's default."""
    return (quantized.get("engines") or {}).get(machine)


def _quantize_like_packaging(torch: Any, module: Any, quantized: Dict[str, Any]) -> Any:
    """The factory's float module, quantized as at packaging, so the quantized state dict fits it."""
    classes = set()
    for name in quantized.get("modules") or ():
        layer = getattr(torch.nn, name, None) if name in ("Linear", "LSTM", "GRU") else None
        if layer is None:
            raise InitError("TORCH_BAD_MANIFEST", "manifest.json names %r as a quantized layer type" % (name,))
        classes.add(layer)
    dtype = getattr(torch, str(quantized.get("dtype")), None)
    if dtype is None:
        raise InitError("TORCH_BAD_MANIFEST", "manifest.json names %r as the quantized dtype" % (quantized.get("dtype"),))
    # In place: the float copy quantize_dynamic would make is only garbage in a 128 MB sandbox.
    return torch.ao.quantization.quantize_dynamic(module, classes, dtype=dtype, inplace=True)


def load_model(torch: Any, task_root: str, model: Optional[Dict[str, Any]]) -> Any:
    """The model described by manifest.json, checked against its packaging digest."""
    quantized = (model or {}).get("quantized")
    if not quantized:
        return _load_model(torch, task_root, model)
    engine = quantized_engine(quantized, platform.machine())
    if engine:
        if engine not in torch.backends.quantized.supported_engines:
            raise InitError(
                "TORCH_QUANTIZED_ENGINE_MISSING",
                "the quantized model needs the %s engine on %s, and this torch has only %s"
                % (engine, platform.machine(), ", ".join(torch.backends.quantized.supported_engines)),
            )
        # Set before loading: packed weights are laid out for the engine current when they load.
        torch.backends.quantized.engine = engine
    with warnings.catch_warnings():
        # torch 2.13 warns that quantized tensors and torch.ao.quantization are deprecated (in
        # favour of torchao) each time they are touched; the packaged model does not depend on that.
        for message in ("torch.quantize_per_tensor", "TypedStorage is deprecated", "torch.ao.quantization is deprecated"):
            warnings.filterwarnings("ignore", message=message)
        return _load_model(torch, task_root, model)


def _load_model(torch: Any, task_root: str, model: Optional[Dict[str, Any]]) -> Any:
    if not model:
        return None
    path = os.path.join(task_root, model["path"])
    got = _sha256(path) if verifies_model() else model["sha256"]
    if got != model["sha256"]:
        raise InitError(
            "TORCH_MODEL_CHANGED",
            "model file %s changed since packaging: expected sha256 %s, got %s; "
            "package the function again" % (path, model["sha256"], got),
        )
    loader = model["loader"]
    if loader == "torchscript":
        return torch.jit.load(path, map_location="cpu").eval()
    if loader == "weights":
        return _weights_only_load(torch, path)
    if loader == "state_dict":
        factory = _factory(model.get("factory"))
        module = factory()
        if not isinstance(module, torch.nn.Module):
            raise InitError(
                "TORCH_BAD_FACTORY",
                "model factory %s returned %s, not a torch.nn.Module"
                % (model.get("factory"), type(module).__name__),
            )
        if model.get("quantized"):
            module = _quantize_like_packaging(torch, module, model["quantized"])
        module.load_state_dict(_weights_only_load(torch, path))
        return module.eval()
    if loader == "pickle":
        # Full unpickling runs code from the file; the user opted in, and the digest
        # above proves the file is the one they packaged.
        obj = torch.load(path, map_location="cpu", weights_only=False)
        return obj.eval() if isinstance(obj, torch.nn.Module) else obj
    raise InitError("TORCH_BAD_LOADER", "unknown model loader %r in manifest.json" % (loader,))


def import_handler(spec: Optional[str]) -> Callable[..., Any]:
    """The user's function from a Lambda-style handler string, `dir/module.function`."""
    if not spec or "." not in spec:
        raise InitError(
            "TORCH_NO_HANDLER",
            "SERVERLESS_TORCH_HANDLER is %r; it must name the function's handler as "
            "'module.function'" % (spec,),
        )
    module_path, _, name = spec.rpartition(".")
    module = importlib.import_module(module_path.replace("/", "."))
    fn = getattr(module, name, None)
    if not callable(fn):
        raise InitError(
            "TORCH_NO_HANDLER",
            "handler %r: module %s has no function %r" % (spec, module.__name__, name),
        )
    return fn


def _init() -> Any:
    task_root = os.environ.get("LAMBDA_TASK_ROOT") or "/var/task"
    opt_dir = os.environ.get("SERVERLESS_TORCH_OPT_DIR") or "/opt"
    tmp_dir = os.environ.get("SERVERLESS_TORCH_TMP_DIR") or "/tmp"

    began = time.perf_counter()
    deps = _unpack.read_deps(opt_dir)
    unpacked = _unpack.unpack(opt_dir, tmp_dir, deps)
    stats = _unpack.last_unpack

    # Preloading the moved libraries is what `import torch` would otherwise do itself: it is
    # counted there, so the figures compare with a tree that has nothing to unpack.
    started = time.perf_counter()
    if unpacked and deps is not None:
        _put_after_task_root(unpacked, task_root)
        _unpack.load_libraries(unpacked, deps)
    with warnings.catch_warnings():
        # CPU wheels import without NumPy; the warning would only be noise in every cold start.
        warnings.filterwarnings("ignore", message="Failed to initialize NumPy", category=UserWarning)
        import torch
    threads = torch_threads(os.environ.get("AWS_LAMBDA_FUNCTION_MEMORY_SIZE"), _unpack.usable_cpus())
    torch.set_num_threads(threads)
    imported = time.perf_counter()

    with open(os.path.join(task_root, "serverless_torch", "manifest.json"), "rb") as f:
        manifest = json.loads(f.read().decode("utf-8"))
    if manifest.get("format") != 1:
        raise InitError(
            "TORCH_BAD_MANIFEST",
            "manifest.json format %r is not supported by this shim (format 1)" % (manifest.get("format"),),
        )
    snapshot = _snapshot_hooks()
    if snapshot is None:
        model = load_model(torch, task_root, manifest.get("model"))
    else:
        # Loaded just before the snapshot, after the handler module imported: whatever the
        # user's module sets up at import is then in place for the warm-up too.
        model = None
        snapshot.register_before_snapshot(lambda: _load_before_snapshot(torch, task_root, manifest.get("model")))
        snapshot.register_after_restore(lambda: _after_restore(torch))
    loaded = time.perf_counter()

    fn = import_handler(os.environ.get("SERVERLESS_TORCH_HANDLER"))
    INIT_TIMINGS.update({
        "unpack": started - began,
        "import": imported - started,
        "load": loaded - imported,
        "handler": time.perf_counter() - loaded,
    })

    if not unpacked:
        unpack_note = "none"
    elif stats["skipped"]:
        unpack_note = "reused %s" % unpacked
    else:
        unpack_note = "%.2f s (%.1f MiB, %d files, %s, threads %d)" % (
            stats["seconds"], stats["bytes"] / 2.0 ** 20, stats["files"], stats["codec"], stats["workers"])
    print(
        "serverless-torch init: unpack %s | import torch %.2f s | model load %.2f s (%s) | torch threads %d"
        % (
            unpack_note,
            imported - started,
            loaded - imported,
            (manifest.get("model") or {}).get("loader", "no model") + (", deferred to before snapshot" if snapshot else ""),
            threads,
        ),
        file=sys.stderr,
        flush=True,
    )
    return model, fn


def _snapshot_hooks() -> Any:
    """Lambda's runtime hooks module during a SnapStart init, else None."""
    if os.environ.get("AWS_LAMBDA_INITIALIZATION_TYPE") != SNAP_START_INIT:
        return None
    try:
        import snapshot_restore_py  # only the Lambda Python 3.12+ runtime has it
    except ImportError:
        return None
    return snapshot_restore_py


def warm_up(torch: Any) -> None:
    """Starts torch's intra-op thread pool and allocator before the snapshot, so the first
    request after a restore does not pay for it."""
    with torch.no_grad():
        a = torch.ones(64, 64)
        torch.mm(a, a).sum()


def _load_before_snapshot(torch: Any, task_root: str, model: Optional[Dict[str, Any]]) -> None:
    global MODEL
    started = time.perf_counter()
    MODEL = load_model(torch, task_root, model)
    loaded = time.perf_counter()
    warm_up(torch)
    INIT_TIMINGS.update({"load": loaded - started, "warm_up": time.perf_counter() - loaded})
    print(
        "serverless-torch before snapshot: model load %.2f s | warm-up %.2f s"
        % (INIT_TIMINGS["load"], INIT_TIMINGS["warm_up"]),
        file=sys.stderr,
        flush=True,
    )


def _after_restore(torch: Any) -> None:
    # Every sandbox restored from one snapshot would otherwise draw the same random numbers.
    torch.seed()


MODEL, _user_handler = _init()


def handler(event: Any, context: Any) -> Any:
    return _user_handler(event, context, MODEL)
