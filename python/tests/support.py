"""Fixtures shared by the Python tests: compressed archives, a fake torch and packaged functions."""

import hashlib
import json
import os
import shutil
import stat
import subprocess
import sys
import tempfile
import textwrap
import unittest
import zlib

PYTHON_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# What ships in every function zip, and what only `invoke local` runs.
PACKAGE_DIR = os.path.join(PYTHON_DIR, "runtime", "serverless_torch")
INVOKE_LOCAL = os.path.join(PYTHON_DIR, "local", "invoke_local.py")
KEY = "0123456789abcdef"


def write(path, text, mode=None):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as f:
        f.write(textwrap.dedent(text))
    if mode is not None:
        os.chmod(path, mode)


try:
    import zstandard
except ImportError:  # only the Pythons the test run gives a host copy of zstandard (see unittest-suite.test.ts)
    zstandard = None

# The codecs this interpreter can write archives with: zlib always, zstd with zstandard.
CODECS = ["zlib"] + (["zstd"] if zstandard is not None else [])
ARCHIVE = "deps-%s.bin" % KEY


def compress(codec, data):
    """One frame as python/build/compress.py writes it."""
    if codec == "zstd":
        return zstandard.ZstdCompressor(level=3, write_checksum=True, write_content_size=True).compress(data)
    context = zlib.compressobj(6)
    return context.compress(data) + context.flush()


def write_deps(opt_dir, **fields):
    deps = {"format": 2, "key": KEY, "codec": "zlib", "archive": ARCHIVE, "unpackedBytes": 0, "files": [],
            "frames": [], "libraries": [], "optRoot": "python"}
    deps.update(fields)
    path = os.path.join(opt_dir, "serverless-torch", "deps.json")
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as f:
        json.dump(deps, f)
    return deps


def pack(opt_dir, contents, codec="zlib", frame_bytes=1 << 20, **fields):
    """Writes the archive and deps.json as the packager does: `contents` is [(path, bytes, mode)],
    their bytes one stream cut into frames of `frame_bytes`; `fields` override deps.json's.
    Returns deps.json's content."""
    stream = b"".join(data if isinstance(data, bytes) else data.encode("utf-8") for _p, data, _m in contents)
    frames = [stream[at:at + frame_bytes] for at in range(0, len(stream), frame_bytes)]
    compressed = [compress(codec, frame) for frame in frames]
    path = os.path.join(opt_dir, "serverless-torch", fields.get("archive", ARCHIVE))
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "wb") as f:
        f.write(b"".join(compressed))
    listed = [[name, len(data if isinstance(data, bytes) else data.encode("utf-8")), mode] for name, data, mode in contents]
    defaults = {"codec": codec, "files": listed, "frames": [[len(c), len(f)] for c, f in zip(compressed, frames)],
                "unpackedBytes": len(stream)}
    defaults.update(fields)
    return write_deps(opt_dir, **defaults)


FAKE_TORCH = {
    "torch/__init__.py": '''
        import json
        import pickle
        import warnings

        # The real CPU wheel says this at import time when NumPy is absent.
        warnings.warn("Failed to initialize NumPy: No module named 'numpy'", UserWarning)

        num_threads = None
        calls = []


        def set_num_threads(n):
            global num_threads
            num_threads = n


        def load(path, map_location=None, weights_only=None, mmap=None):
            calls.append({"fn": "load", "map_location": map_location,
                          "weights_only": weights_only, "mmap": mmap})
            with open(path) as f:
                saved = json.load(f)
            if mmap and saved.get("legacy"):
                raise RuntimeError("mmap can only be used with files saved with "
                                   "`torch.save(_use_new_zipfile_serialization=True), ...")
            if saved["kind"] == "module":
                if weights_only:
                    raise pickle.UnpicklingError("Weights only load failed")
                module = nn.Module()
                module.state = saved["state"]
                return module
            return saved["state"]


        from torch import jit, nn  # noqa: E402
    ''',
    "torch/nn.py": '''
        class Module(object):
            def __init__(self):
                self.training = True
                self.state = None

            def eval(self):
                self.training = False
                return self

            def load_state_dict(self, state_dict):
                self.state = dict(state_dict)
    ''',
    "torch/jit.py": '''
        import json

        import torch
        from torch import nn


        class ScriptModule(nn.Module):
            pass


        def load(path, map_location=None):
            torch.calls.append({"fn": "jit.load", "map_location": map_location})
            module = ScriptModule()
            with open(path) as f:
                module.state = json.load(f)["state"]
            return module
    ''',
}

# Reports what the shim handed over, so tests can check it from outside the process.
REPORTING_HANDLER = '''
    import os
    import sys

    import torch

    LAST = None


    def handle(event, context, model):
        global LAST
        if event.get("print"):
            print(event["print"])
        if event.get("raise"):
            LAST = ValueError("bad input: %s" % event["raise"])
            raise LAST
        if event.get("unserialisable"):
            return {"a set": {1, 2}}
        return {
            "event": event,
            "model_type": type(model).__name__,
            "training": getattr(model, "training", None),
            "state": model.state if isinstance(model, torch.nn.Module) else model,
            "threads": torch.num_threads,
            "calls": torch.calls,
            "sys_path": sys.path,
            "cwd": os.getcwd(),
            "shim_file": sys.modules["serverless_torch.shim"].__file__,
            "context": {
                "function_name": context.function_name,
                "function_version": context.function_version,
                "memory_limit_in_mb": context.memory_limit_in_mb,
                "invoked_function_arn": context.invoked_function_arn,
                "aws_request_id": context.aws_request_id,
                "log_group_name": context.log_group_name,
                "log_stream_name": context.log_stream_name,
                "remaining": context.get_remaining_time_in_millis(),
            },
        }
'''


class FunctionCase(unittest.TestCase):
    """A packaged function in a temporary directory: task root, /opt and /tmp."""

    def setUp(self):
        self.base = tempfile.mkdtemp(prefix="serverless-torch-test-")
        self.addCleanup(shutil.rmtree, self.base, True)
        self.task = os.path.join(self.base, "task")
        self.opt = os.path.join(self.base, "opt")
        self.tmp = os.path.join(self.base, "tmp")
        os.makedirs(self.tmp)
        shutil.copytree(PACKAGE_DIR, os.path.join(self.task, "serverless_torch"),
                        ignore=shutil.ignore_patterns("__pycache__"))
        for rel, text in FAKE_TORCH.items():
            write(os.path.join(self.opt, "python", rel), text)
        write(os.path.join(self.task, "handler.py"), REPORTING_HANDLER)

    model_id = "m0123456789ab"

    def package_model(self, loader, saved, factory=None, sha256=None, path="model/model.pt", **extra):
        """Writes the model file and a manifest.json (format 2) naming it under self.model_id,
        the SERVERLESS_TORCH_MODEL env() gives; `extra` adds manifest fields (quantized, load...)."""
        data = json.dumps(saved).encode("utf-8")
        model_path = os.path.join(self.task, path)
        os.makedirs(os.path.dirname(model_path), exist_ok=True)
        with open(model_path, "wb") as f:
            f.write(data)
        entry = {"path": path, "kind": "file", "loader": loader, "factory": factory,
                 "sha256": sha256 or hashlib.sha256(data).hexdigest()}
        entry.update(extra)
        self.write_manifest({self.model_id: entry})

    def write_manifest(self, models):
        with open(os.path.join(self.task, "serverless_torch", "manifest.json"), "w") as f:
            json.dump({"format": 2, "models": models}, f)

    def env(self, **overrides):
        env = {k: v for k, v in os.environ.items()
               if not k.startswith(("AWS_", "SERVERLESS_TORCH_", "PYTHON"))}
        env.update({
            "LAMBDA_TASK_ROOT": self.task,
            "SERVERLESS_TORCH_OPT_DIR": self.opt,
            "SERVERLESS_TORCH_TMP_DIR": self.tmp,
            "SERVERLESS_TORCH_HANDLER": "handler.handle",
            "SERVERLESS_TORCH_MODEL": self.model_id,
            "AWS_LAMBDA_FUNCTION_NAME": "predict",
            "AWS_LAMBDA_FUNCTION_MEMORY_SIZE": "1769",
            "AWS_LAMBDA_FUNCTION_TIMEOUT": "30",
        })
        for key, value in overrides.items():
            if value is None:
                env.pop(key, None)
            else:
                env[key] = value
        return env

    def invoke(self, events, **env):
        """Runs invoke_local.py like the plugin does; returns (exit code, result lines, stdout, stderr)."""
        results = os.path.join(self.base, "results.jsonl")
        stdin = "".join((e if isinstance(e, str) else json.dumps(e)) + "\n" for e in events)
        proc = subprocess.run(
            ["/bin/sh", "-c", 'exec "$@" 3>"$0"', results, sys.executable, "-S", "-s", INVOKE_LOCAL],
            input=stdin.encode("utf-8"), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
            env=self.env(**env), timeout=120,
        )
        with open(results) as f:
            lines = [json.loads(line) for line in f]
        return proc.returncode, lines, proc.stdout.decode(), proc.stderr.decode()

    def invoke_ok(self, events, **env):
        code, lines, out, err = self.invoke(events, **env)
        self.assertEqual(code, 0, err)
        self.assertEqual(len(lines), len(events), err)
        return lines
