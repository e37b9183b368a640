"""Python side of bench/cold-start.ts. Standard library only.

  python -I -S -B cold_start.py run ours|floor|baseline    one cold start, one JSON line on fd 3
  python cold_start.py floor OPT_DIR TASK_ROOT                merge the packed archive into OPT_DIR/python
  python cold_start.py slim SITE_DIR                          serverless-python-requirements' `slim`

`run` is started in a fresh interpreter with the Lambda layout given in the environment
(LAMBDA_TASK_ROOT, SERVERLESS_TORCH_OPT_DIR, SERVERLESS_TORCH_TMP_DIR); it imports nothing
from the layout before the phase it times.
"""

import json
import os
import shutil
import sys
import time

STARTED = time.time()

if os.environ.get("BENCH_CPUS"):
    # The cores the function's memory buys vCPUs for: the first ones this process may use.
    os.sched_setaffinity(0, sorted(os.sched_getaffinity(0))[:int(os.environ["BENCH_CPUS"])])


def lambda_sys_path(task_root, opt_dir):
    """Lambda's order: task root, the layers' two directories, then the runtime's own."""
    version = "python%d.%d" % sys.version_info[:2]
    prefixes = tuple(os.path.abspath(p) + os.sep for p in {sys.base_prefix, sys.base_exec_prefix})
    stdlib = [
        p for p in sys.path[1:]
        if p and (os.path.abspath(p) + os.sep).startswith(prefixes)
        and os.path.basename(p.rstrip(os.sep)) not in ("site-packages", "dist-packages")
    ]
    return [task_root, os.path.join(opt_dir, "python", "lib", version, "site-packages"),
            os.path.join(opt_dir, "python")] + stdlib


class Context(object):
    function_name = "bench"
    aws_request_id = "bench"

    def get_remaining_time_in_millis(self):
        return 30000


def _peak_rss_bytes():
    import resource
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def run_serverless_torch(task_root, event):
    """Our shim (for `ours` and `floor`): its import is the whole init phase."""
    from serverless_torch import shim
    init = dict(shim.INIT_TIMINGS)
    started = time.perf_counter()
    result = shim.handler(event, Context())
    init["inference"] = time.perf_counter() - started
    return init, result


def run_baseline(task_root, event, handler_spec, model_path, factory):
    """What a serverless-python-requirements function does: unzip_requirements first, then
    torch, then the model, with no bytecode anywhere."""
    phases = {}
    started = time.perf_counter()
    import unzip_requirements  # noqa: F401
    phases["unpack"] = time.perf_counter() - started
    started = time.perf_counter()
    import torch
    phases["import"] = time.perf_counter() - started
    started = time.perf_counter()
    import importlib
    module_name, _, attr = factory.partition(":")
    model = getattr(importlib.import_module(module_name), attr)()
    model.load_state_dict(torch.load(os.path.join(task_root, model_path), map_location="cpu", weights_only=True))
    model.eval()
    phases["load"] = time.perf_counter() - started
    module_path, _, name = handler_spec.rpartition(".")
    fn = getattr(importlib.import_module(module_path.replace("/", ".")), name)
    started = time.perf_counter()
    result = fn(event, Context(), model)
    phases["inference"] = time.perf_counter() - started
    return phases, result


def run(variant):
    task_root = os.environ["LAMBDA_TASK_ROOT"]
    opt_dir = os.environ["SERVERLESS_TORCH_OPT_DIR"]
    out = os.fdopen(3, "w")
    with open(os.environ["BENCH_EVENT"], "rb") as f:
        event = json.loads(f.read().decode("utf-8"))
    sys.path[:] = lambda_sys_path(task_root, opt_dir)
    os.chdir(task_root)
    if variant == "baseline":
        phases, result = run_baseline(
            task_root, event, os.environ["SERVERLESS_TORCH_HANDLER"],
            os.environ["BENCH_MODEL_PATH"], os.environ["BENCH_MODEL_FACTORY"])
    else:
        phases, result = run_serverless_torch(task_root, event)
    finished = time.time()
    modules = len(sys.modules)
    out.write(json.dumps({
        "started": STARTED,
        "finished": finished,
        "phases": phases,
        "peakRss": _peak_rss_bytes(),
        "modules": modules,
        "dontWriteBytecode": sys.dont_write_bytecode,
        "result": result,
    }) + "\n")
    out.flush()


def floor(opt_dir, task_root):
    """Unpacks the packed archive with the shim's own unpacker and moves every file into the tree
    under /opt/python, as if everything had fit uncompressed; removes deps.json so there is
    nothing to unpack."""
    packed = os.path.join(opt_dir, "serverless-torch")
    with open(os.path.join(packed, "deps.json")) as f:
        deps = json.load(f)
    root = os.path.join(opt_dir, deps.get("optRoot") or "python")
    # The decoder (zstandard) ships uncompressed in /opt/python; the unpacker is the shim's.
    sys.path[:0] = [task_root, root]
    from serverless_torch import unpack
    scratch = os.path.join(opt_dir, ".floor-unpack")
    os.environ.pop("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", None)
    unpacked = unpack.unpack(opt_dir, scratch, deps)
    for name, _size, _mode in deps["files"]:
        target = os.path.join(root, name)
        os.makedirs(os.path.dirname(target), exist_ok=True)
        os.replace(os.path.join(unpacked, name), target)
    shutil.rmtree(scratch)
    shutil.rmtree(packed)


def slim(site_dir):
    """serverless-python-requirements' `slim: true` defaults: no bytecode, no dist-info,
    no tests directories (its strip of shared libraries runs separately, with `strip`)."""
    removed = 0
    for dirpath, dirnames, filenames in os.walk(site_dir, topdown=True):
        for name in list(dirnames):
            if name == "__pycache__" or name.endswith(".dist-info") or name == "tests":
                shutil.rmtree(os.path.join(dirpath, name))
                dirnames.remove(name)
                removed += 1
        for name in filenames:
            if name.endswith((".pyc", ".pyo")):
                os.remove(os.path.join(dirpath, name))
                removed += 1
    print(removed)


if __name__ == "__main__":
    command = sys.argv[1]
    if command == "run":
        run(sys.argv[2])
    elif command == "floor":
        floor(sys.argv[2], sys.argv[3])
    elif command == "slim":
        slim(sys.argv[2])
    else:
        raise SystemExit("unknown command %r" % command)
