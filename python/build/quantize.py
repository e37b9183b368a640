"""Dynamic int8 quantization of the service's model, run on the build machine at package time.

The plugin runs this with the host copy of the torch version the functions run:

    python -I -S quantize.py request.json result.json

request.json names the model, how it loads, the layer types to quantize and where to write
the packaged file; result.json says what was done, or why not ({"ok": false, "code", "message"}).
It is never copied into a function.

Packaged formats (the loader the shim uses for the file written):
- torchscript in  -> torchscript out: graph-mode quantize_dynamic_jit (it quantizes Linear only).
- pickle in       -> pickle out: the quantized module, torch.save'd whole.
- state_dict in   -> state_dict out: the quantized module's state dict, which a weights-only
  load reads; the shim rebuilds the module with factory() and quantize_dynamic before
  load_state_dict. Quantized LSTM/GRU weights are TorchScript objects that a weights-only
  load refuses, so such a model is scripted and shipped as torchscript instead.
"""

import importlib
import io
import json
import os
import pickle
import statistics
import sys
import time
import traceback
import warnings

# Enough calls for a stable median on a busy machine, without making packaging slow.
MIN_CALLS = 15
MAX_CALLS = 400
BUDGET_SECONDS = 2.0
WARMUP_CALLS = 3


class Refusal(Exception):
    """A problem the user can fix: `code` is the plugin's error code."""

    def __init__(self, code, message):
        super(Refusal, self).__init__(message)
        self.code = code


def describe_error(error):
    # torch's messages often say what is wrong only on the second line ("Error(s) in loading state_dict: ...").
    text = " ".join(line.strip() for line in str(error).strip().splitlines()[:3] if line.strip())
    return "%s: %s" % (type(error).__name__, text if len(text) <= 400 else text[:400] + "...")


def import_factory(spec):
    module_name, _, attr = spec.partition(":")
    target = importlib.import_module(module_name)
    for name in attr.split("."):
        target = getattr(target, name)
    return target


def build_module(torch, factory):
    module = import_factory(factory)()
    if not isinstance(module, torch.nn.Module):
        raise Refusal(
            "TORCH_QUANTIZE_MODEL_INVALID",
            "model factory %s returned %s, not a torch.nn.Module" % (factory, type(module).__name__),
        )
    return module


def load_float(torch, model):
    """The model as the shim would load it without quantization."""
    path, loader = model["path"], model["loader"]
    try:
        if loader == "torchscript":
            return torch.jit.load(path, map_location="cpu").eval()
        if loader == "pickle":
            obj = torch.load(path, map_location="cpu", weights_only=False)
            if not isinstance(obj, torch.nn.Module):
                raise Refusal(
                    "TORCH_QUANTIZE_NEEDS_MODULE",
                    "%s holds a %s, not a torch.nn.Module: only a module can be quantized"
                    % (model["packagePath"], type(obj).__name__),
                )
            return obj.eval()
        if loader == "state_dict":
            module = build_module(torch, model["factory"])
            module.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))
            return module.eval()
    except Refusal:
        raise
    except Exception as error:  # noqa: BLE001 - any failure here is the model's, reported by name
        hint = ""
        if isinstance(error, ImportError):
            hint = (" (quantizing runs on this machine with torch and its own dependencies only:"
                    " the model's code must not need other packages to build the module)")
        raise Refusal(
            "TORCH_QUANTIZE_MODEL_INVALID",
            "could not load %s with the %s loader to quantize it: %s%s"
            % (model["packagePath"], loader, describe_error(error), hint),
        )
    raise Refusal("TORCH_QUANTIZE_MODEL_INVALID", "loader %r cannot be quantized" % (loader,))


def module_classes(torch, names):
    return set(getattr(torch.nn, name) for name in names)


def quantized_layers(float_model, quantized, classes):
    """How many layers of each type were swapped for a quantized one (their inner parts not counted)."""
    swapped = dict(quantized.named_modules())
    counts = {}
    for name, sub in float_model.named_modules():
        now = swapped.get(name)
        if type(sub) in classes and now is not None and type(now).__module__.startswith("torch.ao.nn.quantized.dynamic"):
            counts[type(sub).__name__] = counts.get(type(sub).__name__, 0) + 1
    return counts


def graph_count(graph, kind):
    return len(graph.findAllNodes(kind, True))


def saved_bytes(save, obj):
    buffer = io.BytesIO()
    save(obj, buffer)
    return buffer.getvalue()


def quantize(torch, request, float_model):
    """Returns (loader, bytes of the packaged file, layer counts, notes)."""
    model = request["model"]
    dtype = getattr(torch, request["dtype"])
    classes = module_classes(torch, request["modules"])
    notes = []
    if model["loader"] == "torchscript":
        qconfig = torch.ao.quantization.default_dynamic_qconfig
        quantized = torch.ao.quantization.quantize_dynamic_jit(float_model, {"": qconfig})
        layers = {}
        linear = graph_count(quantized.graph, "quantized::linear_dynamic")
        if linear:
            layers["Linear"] = linear
        recurrent = graph_count(float_model.inlined_graph, "aten::lstm") + graph_count(float_model.inlined_graph, "aten::gru")
        if recurrent:
            notes.append(
                "%d LSTM/GRU layers stay float: graph-mode quantization of a TorchScript model quantizes Linear "
                "only; save a state dict with a factory to quantize them too" % recurrent)
        return "torchscript", saved_bytes(torch.jit.save, quantized), layers, notes

    quantized = torch.ao.quantization.quantize_dynamic(float_model, classes, dtype=dtype)
    layers = quantized_layers(float_model, quantized, classes)
    if model["loader"] == "pickle":
        return "pickle", saved_bytes(torch.save, quantized), layers, notes

    data = saved_bytes(torch.save, quantized.state_dict())
    try:
        torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
        return "state_dict", data, layers, notes
    except pickle.UnpicklingError:
        pass
    try:
        scripted = torch.jit.script(quantized)
    except Exception as error:  # noqa: BLE001
        raise Refusal(
            "TORCH_QUANTIZE_NOT_SAVABLE",
            "the quantized %s weights cannot be saved as a state dict that loads weights-only, and "
            "torch.jit.script of the quantized module failed (%s). Make the module scriptable, or set "
            "quantize: false" % ("/".join(sorted(set(layers) - {"Linear"})) or "layer", describe_error(error)),
        )
    notes.append(
        "packaged as TorchScript: quantized %s weights are TorchScript objects that a weights-only state "
        "dict cannot hold" % "/".join(sorted(set(layers) - {"Linear"})))
    return "torchscript", saved_bytes(torch.jit.save, scripted), layers, notes


def load_packaged(torch, request, loader, path):
    """The packaged file loaded the way the shim loads it (serverless_torch/shim.py load_model)."""
    if loader == "torchscript":
        return torch.jit.load(path, map_location="cpu").eval()
    if loader == "pickle":
        return torch.load(path, map_location="cpu", weights_only=False).eval()
    module = build_module(torch, request["model"]["factory"])
    module = torch.ao.quantization.quantize_dynamic(
        module, module_classes(torch, request["modules"]), dtype=getattr(torch, request["dtype"]), inplace=True)
    module.load_state_dict(torch.load(path, map_location="cpu", weights_only=True, mmap=True))
    return module.eval()


def _numbers(value, ints):
    if isinstance(value, list):
        for item in value:
            _numbers(item, ints)
    elif isinstance(value, bool) or not isinstance(value, (int, float)):
        raise Refusal("TORCH_SAMPLE_INPUT_INVALID", "holds %r, which is not a number" % (value,))
    elif isinstance(value, float):
        ints[0] = False


def sample_tensor(torch, path, shown):
    try:
        with open(path, "rb") as f:
            value = json.loads(f.read().decode("utf-8"))
    except (ValueError, OSError) as error:
        raise Refusal("TORCH_SAMPLE_INPUT_INVALID", "sampleInput %s is not JSON: %s" % (shown, error))
    if isinstance(value, dict):
        if "inputs" not in value:
            raise Refusal(
                "TORCH_SAMPLE_INPUT_INVALID",
                "sampleInput %s is an object without \"inputs\": write the model's input as a JSON array "
                "of numbers, or as {\"inputs\": [...]}" % shown)
        value = value["inputs"]
    if not isinstance(value, list) or not value:
        raise Refusal("TORCH_SAMPLE_INPUT_INVALID", "sampleInput %s must hold a non-empty JSON array of numbers" % shown)
    ints = [True]
    try:
        _numbers(value, ints)
    except Refusal as refusal:
        raise Refusal(refusal.code, "sampleInput %s %s" % (shown, refusal))
    try:
        # Whole numbers only (token ids) make an int64 tensor; anything else is float32.
        return torch.tensor(value, dtype=torch.int64 if ints[0] else torch.float32)
    except (ValueError, TypeError, RuntimeError) as error:
        raise Refusal(
            "TORCH_SAMPLE_INPUT_INVALID",
            "sampleInput %s is not a rectangular array of numbers (%s)" % (shown, describe_error(error)))


def output_tensors(torch, output):
    if isinstance(output, torch.Tensor):
        return [output]
    if isinstance(output, (list, tuple)):
        return [t for item in output for t in output_tensors(torch, item)]
    if isinstance(output, dict):
        return [t for key in sorted(output) for t in output_tensors(torch, output[key])]
    return []


def run_on_sample(torch, model, x, which, shown):
    try:
        with torch.inference_mode():
            return output_tensors(torch, model(x))
    except Exception as error:  # noqa: BLE001
        if which == "float":
            raise Refusal(
                "TORCH_SAMPLE_INPUT_INVALID",
                "the model does not accept sampleInput %s (a %s tensor of shape %s): %s"
                % (shown, str(x.dtype).replace("torch.", ""), list(x.shape), describe_error(error)))
        raise Refusal(
            "TORCH_QUANTIZE_FAILED",
            "the quantized model fails on sampleInput %s, where the float model works: %s. Set quantize: false"
            % (shown, describe_error(error)))


def differences(torch, reference, other, shown):
    if not reference:
        raise Refusal("TORCH_SAMPLE_INPUT_INVALID", "the model's output for sampleInput %s holds no tensor to compare" % shown)
    if [tuple(t.shape) for t in reference] != [tuple(t.shape) for t in other]:
        raise Refusal("TORCH_QUANTIZE_FAILED", "the quantized model's output has another shape than the float model's")
    max_abs = 0.0
    scale = 0.0
    for a, b in zip(reference, other):
        a64, b64 = a.detach().to(torch.float64), b.detach().to(torch.float64)
        if a64.numel():
            max_abs = max(max_abs, float((a64 - b64).abs().max()))
            scale = max(scale, float(a64.abs().max()))
    return {"maxAbsDiff": max_abs, "maxRelDiff": (max_abs / scale) if scale else None}


def latencies(torch, float_model, quantized_model, x):
    """Median seconds per call of each, calls interleaved so load on the machine hits both alike."""
    times = {"float": [], "quantized": []}
    models = [("float", float_model), ("quantized", quantized_model)]
    with torch.inference_mode():
        for _ in range(WARMUP_CALLS):
            for _name, model in models:
                model(x)
        started = time.perf_counter()
        calls = 0
        while calls < MAX_CALLS and (calls < MIN_CALLS or time.perf_counter() - started < BUDGET_SECONDS):
            for name, model in (models if calls % 2 == 0 else models[::-1]):
                t0 = time.perf_counter()
                model(x)
                times[name].append(time.perf_counter() - t0)
            calls += 1
    return {
        "floatMs": statistics.median(times["float"]) * 1000.0,
        "quantizedMs": statistics.median(times["quantized"]) * 1000.0,
        "calls": calls,
    }


def run(request):
    with warnings.catch_warnings():
        # CPU wheels import without NumPy; only noise here.
        warnings.filterwarnings("ignore", message="Failed to initialize NumPy")
        import torch
    # torch.ao.quantization and quantized tensors warn that they are deprecated in favour of
    # torchao; the packaged model does not depend on that, and the warnings would bury the report.
    warnings.filterwarnings("ignore", category=DeprecationWarning)
    warnings.filterwarnings("ignore", category=UserWarning, module=r"torch\.")

    model = request["model"]
    host_engine = torch.backends.quantized.engine
    float_model = load_float(torch, model)
    shown = request.get("sampleShown") or request.get("sample")
    x = sample_tensor(torch, request["sample"], shown) if request.get("sample") else None
    float_out = run_on_sample(torch, float_model, x, "float", shown) if x is not None else None

    # Both quantize_dynamic and quantize_dynamic_jit work on a copy: float_model stays the reference.
    loader, data, layers, notes = quantize(torch, request, float_model)
    result = {
        "ok": True,
        "torchVersion": torch.__version__,
        "hostEngine": host_engine,
        "floatBytes": os.path.getsize(model["path"]),
        "layers": layers,
        "notes": notes,
        "engines": {},
    }
    if not layers:
        result.update({"quantized": False, "loader": model["loader"], "bytes": result["floatBytes"]})
        return result
    with open(request["output"], "wb") as f:
        f.write(data)
    result.update({"quantized": True, "loader": loader, "bytes": len(data)})

    torch.set_num_threads(1)
    # "default" is what x86_64 functions use (torch's own choice); arm64 functions use qnnpack.
    engines = []
    for engine in request["engines"]:
        engine = host_engine if engine == "default" else engine
        if engine in torch.backends.quantized.supported_engines and engine not in engines:
            engines.append(engine)
    for engine in engines:
        torch.backends.quantized.engine = engine
        packaged = load_packaged(torch, request, loader, request["output"])
        measured = {"loaded": True}
        if x is not None:
            measured.update(differences(torch, float_out, run_on_sample(torch, packaged, x, "quantized", shown), shown))
            measured.update(latencies(torch, float_model, packaged, x))
        result["engines"][engine] = measured
    torch.backends.quantized.engine = host_engine
    return result


def main(argv):
    # Importing the factory's module must not leave __pycache__ in the user's service.
    sys.dont_write_bytecode = True
    # Absolute before the chdir into the service below.
    request_path, result_path = os.path.abspath(argv[1]), os.path.abspath(argv[2])
    with open(request_path) as f:
        request = json.load(f)
    for entry in reversed(request.get("sysPath", [])):
        sys.path.insert(0, entry)
    if request.get("cwd"):
        os.chdir(request["cwd"])
    try:
        result = run(request)
    except Refusal as refusal:
        result = {"ok": False, "code": refusal.code, "message": str(refusal)}
    except Exception as error:  # noqa: BLE001 - reported to the plugin, which shows it as a bug
        result = {"ok": False, "code": "TORCH_QUANTIZE_FAILED", "message": describe_error(error),
                  "traceback": traceback.format_exc()}
    with open(result_path, "w") as f:
        json.dump(result, f)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
