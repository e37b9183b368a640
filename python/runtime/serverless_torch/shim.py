"""Lambda handler: `serverless_torch.shim.handler`.

Importing this module is the function's init phase: it unpacks the compressed
dependencies, imports torch, loads the function's model once (manifest.json
"models", the one SERVERLESS_TORCH_MODEL names) and imports the user's handler, so
that every invocation only runs `user_handler(event, context, model)`, or
`user_handler(event, context)` for a two-argument handler (which reaches the model
through serverless_torch.model()).
"""

import hashlib
import importlib
import inspect
import json
import os
import platform
import random
import sys
import time
import warnings
from typing import Any, Callable, Dict, Optional

from serverless_torch import unpack as _unpack
from serverless_torch.errors import InitError

# Seconds each init phase took in this sandbox (unpack, import, load, handler), for the init
# line and for bench/cold-start.
INIT_TIMINGS: Dict[str, float] = {}

# Lambda sets this while it runs the init whose memory and /tmp a SnapStart snapshot captures.
SNAP_START_INIT = "snap-start"

# The manifest format this shim reads (lib/bundle/function-package.ts writes it).
MANIFEST_FORMAT = 2


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


def load_model(torch: Any, task_root: str, model: Optional[Dict[str, Any]], download: Any = None) -> Any:
    """The model described by manifest.json: from the package, checked against its packaging
    digests, or from `download` (remote.Download), which checked the object it fetched."""
    quantized = (model or {}).get("quantized")
    if not quantized:
        return _load_model(torch, task_root, model, download)
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
        return _load_model(torch, task_root, model, download)


def check_digests(path: str, model: Dict[str, Any]) -> None:
    """The model as packaged: a file's sha256, or each file of a directory."""
    files = model.get("files")
    checks = [(path, model["sha256"])] if files is None else [
        (os.path.join(path, *name.split("/")), digest) for name, digest in sorted(files.items())]
    for file, expected in checks:
        try:
            got = _sha256(file)
        except OSError as e:
            raise InitError("TORCH_MODEL_CHANGED", "model file %s is missing since packaging (%s); package the function again" % (file, e))
        if got != expected:
            raise InitError(
                "TORCH_MODEL_CHANGED",
                "model file %s changed since packaging: expected sha256 %s, got %s; "
                "package the function again" % (file, expected, got),
            )


def _factory_module(torch: Any, model: Dict[str, Any]) -> Any:
    factory = _factory(model.get("factory"))
    module = factory()
    if not isinstance(module, torch.nn.Module):
        raise InitError(
            "TORCH_BAD_FACTORY",
            "model factory %s returned %s, not a torch.nn.Module" % (model.get("factory"), type(module).__name__),
        )
    if model.get("quantized"):
        module = _quantize_like_packaging(torch, module, model["quantized"])
    return module


def _load_safetensors(torch: Any, path: str, model: Dict[str, Any]) -> Any:
    from safetensors.torch import load_file  # a requirement the packager adds

    tensors = load_file(path, device="cpu")
    if not model.get("factory"):
        return tensors
    module = _factory_module(torch, model)
    module.load_state_dict(tensors)
    return module.eval()


class Loaded(object):
    """A transformers model with its tokenizer and/or processor, as the handler receives them."""

    def __init__(self, model: Any, tokenizer: Any = None, processor: Any = None) -> None:
        self.model = model
        self.tokenizer = tokenizer
        self.processor = processor


def _load_transformers(path: str, model: Dict[str, Any]) -> Any:
    # Nothing is fetched from the Hub at cold start: the directory is all there is, and its
    # caches go to /tmp, the only writable place on Lambda.
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("HF_HOME", os.path.join(os.environ.get("SERVERLESS_TORCH_TMP_DIR") or "/tmp", "huggingface"))
    import transformers

    def auto(name: str) -> Any:
        cls = getattr(transformers, name, None)
        if cls is None:
            raise InitError("TORCH_BAD_MANIFEST", "transformers %s has no %s" % (transformers.__version__, name))
        return cls

    # Weights-only: safetensors when the directory has them, never pickled weights by choice.
    safetensors = any(name.endswith(".safetensors") for name in (model.get("files") or {}))
    loaded = auto(model.get("class") or "AutoModel").from_pretrained(path, local_files_only=True, use_safetensors=safetensors or None)
    if hasattr(loaded, "eval"):
        loaded = loaded.eval()
    tokenizer = auto(model["tokenizer"]).from_pretrained(path, local_files_only=True) if model.get("tokenizer") else None
    processor = auto(model["processor"]).from_pretrained(path, local_files_only=True) if model.get("processor") else None
    return Loaded(loaded, tokenizer, processor) if tokenizer is not None or processor is not None else loaded


def _load_model(torch: Any, task_root: str, model: Optional[Dict[str, Any]], download: Any = None) -> Any:
    if not model:
        return None
    if download is not None:
        path = download.path()
    else:
        path = os.path.join(task_root, model["path"])
        if verifies_model():
            check_digests(path, model)
    loader = model["loader"]
    if loader == "torchscript":
        return torch.jit.load(path, map_location="cpu").eval()
    if loader == "weights":
        return _weights_only_load(torch, path)
    if loader == "state_dict":
        module = _factory_module(torch, model)
        module.load_state_dict(_weights_only_load(torch, path))
        return module.eval()
    if loader == "safetensors":
        return _load_safetensors(torch, path, model)
    if loader == "export":
        # A GraphModule: already in inference form (it refuses eval()).
        return torch.export.load(path).module()
    if loader == "transformers":
        return _load_transformers(path, model)
    if loader == "custom":
        return _factory(model.get("load"))(path)
    if loader == "pickle":
        # Full unpickling runs code from the file; the user opted in, and the digest
        # above proves the file is the one they packaged.
        obj = torch.load(path, map_location="cpu", weights_only=False)
        return obj.eval() if isinstance(obj, torch.nn.Module) else obj
    raise InitError("TORCH_BAD_LOADER", "unknown model loader %r in manifest.json" % (loader,))


def handler_takes_model(fn: Callable[..., Any], spec: str) -> bool:
    """Whether the handler is called with the model: three positional parameters (or *args) get
    it; two get (event, context), as Lambda calls any handler."""
    try:
        parameters = list(inspect.signature(fn).parameters.values())
    except (TypeError, ValueError):
        return False
    kinds = [p.kind for p in parameters]
    if inspect.Parameter.VAR_POSITIONAL in kinds:
        return True
    positional = sum(1 for kind in kinds if kind in (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD))
    if positional >= 3:
        return True
    if positional == 2:
        return False
    raise InitError(
        "TORCH_HANDLER_SIGNATURE",
        "handler %r takes %d positional argument(s), but Lambda calls it with the event and the context: "
        "define it as handler(event, context) or handler(event, context, model)" % (spec, positional),
    )


def function_model(manifest: Dict[str, Any]) -> Optional[Dict[str, Any]]:
    """The manifest entry of this function's model (SERVERLESS_TORCH_MODEL), or None."""
    if manifest.get("format") != MANIFEST_FORMAT:
        raise InitError(
            "TORCH_BAD_MANIFEST",
            "manifest.json format %r is not supported by this shim (format %d)" % (manifest.get("format"), MANIFEST_FORMAT),
        )
    model_id = os.environ.get("SERVERLESS_TORCH_MODEL")
    if not model_id:
        return None
    model = (manifest.get("models") or {}).get(model_id)
    if model is None:
        raise InitError(
            "TORCH_BAD_MANIFEST",
            "SERVERLESS_TORCH_MODEL is %r, which manifest.json does not list; package the function again" % (model_id,),
        )
    return model


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

    with open(os.path.join(task_root, "serverless_torch", "manifest.json"), "rb") as f:
        model = function_model(json.loads(f.read().decode("utf-8")))
    download = None
    if model and model.get("s3"):
        from serverless_torch import remote

        # Started first: the download waits on the network while unpacking and import torch
        # keep the CPU busy.
        download = remote.Download(model, tmp_dir)

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

    global MODEL, MODEL_LOADED, _TAKES_MODEL
    snapshot = _snapshot_hooks()
    if snapshot is None:
        MODEL = load_model(torch, task_root, model, download)
        MODEL_LOADED = True
    else:
        # Lambda runs after-restore hooks in the order they were registered: the reseed goes
        # first, before any hook of the user's module draws a random number.
        snapshot.register_after_restore(lambda: _after_restore(torch))
    loaded = time.perf_counter()

    spec = os.environ.get("SERVERLESS_TORCH_HANDLER")
    fn = import_handler(spec)
    _TAKES_MODEL = handler_takes_model(fn, str(spec))
    if snapshot is not None:
        # Lambda runs before-snapshot hooks in reverse order of registration: registered after
        # the user's module imported (and registered its own), loading the model runs first, so
        # a user's warm-up hook finds it through serverless_torch.model().
        snapshot.register_before_snapshot(lambda: _load_before_snapshot(torch, task_root, model, download))
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
    fetched = ""
    if download is not None and not snapshot:
        from serverless_torch import fetch

        fetched = " | model from S3 %s" % fetch.describe(fetch.last_fetch)
    print(
        "serverless-torch init: unpack %s | import torch %.2f s | model load %.2f s (%s)%s | torch threads %d"
        % (
            unpack_note,
            imported - started,
            loaded - imported,
            (model or {}).get("loader", "no model") + (", deferred to before snapshot" if snapshot else ""),
            fetched,
            threads,
        ),
        file=sys.stderr,
        flush=True,
    )
    return fn


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


def _load_before_snapshot(torch: Any, task_root: str, model: Optional[Dict[str, Any]], download: Any) -> None:
    global MODEL, MODEL_LOADED
    started = time.perf_counter()
    MODEL = load_model(torch, task_root, model, download)
    MODEL_LOADED = True
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
    # Every sandbox restored from one snapshot would otherwise draw the same random numbers:
    # torch's, Python's and, when the function uses it, NumPy's generator are seeded afresh.
    torch.seed()
    random.seed()
    numpy = sys.modules.get("numpy")
    if numpy is not None:
        numpy.random.seed()


# The loaded model: set during init, or by the before-snapshot hook with SnapStart (None for a
# function without one); MODEL_LOADED tells a None model from one not loaded yet.
MODEL: Any = None
MODEL_LOADED = False
_TAKES_MODEL = True
_user_handler = _init()


def handler(event: Any, context: Any) -> Any:
    if _TAKES_MODEL:
        return _user_handler(event, context, MODEL)
    return _user_handler(event, context)
