import os
import unittest

from tests.support import FunctionCase, write

STATE = {"linear.weight": [[1.0, 2.0]], "linear.bias": [0.5]}

# What the fake torch needs for the warm-up and the reseed after a restore.
TORCH_ADDITIONS = """

seeds = 0


def seed():
    global seeds
    seeds += 1


class no_grad(object):
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


class _Tensor(object):
    def sum(self):
        return self


def ones(*shape):
    calls.append({"fn": "ones"})
    return _Tensor()


def mm(a, b):
    calls.append({"fn": "mm"})
    return _Tensor()
"""

# Lambda's runtime module, which records hooks; the handler below plays Lambda and runs them as
# Lambda does: before-snapshot hooks in reverse order of registration, after-restore hooks in order.
SNAPSHOT_MODULE = """
before = []
after = []


def register_before_snapshot(fn, *args, **kwargs):
    before.append(fn)


def register_after_restore(fn, *args, **kwargs):
    after.append(fn)
"""

HANDLER = """
import random

import numpy
import serverless_torch
import snapshot_restore_py
import torch

SEEN = {}


def warm_up():
    # The warm-up a user registers at import: it needs the loaded model.
    SEEN["model in my before-snapshot hook"] = serverless_torch.model().state


def after_restore():
    SEEN["torch seeds when my after-restore hook runs"] = torch.seeds


snapshot_restore_py.register_before_snapshot(warm_up)
snapshot_restore_py.register_after_restore(after_restore)


def handle(event, context, model):
    if event.get("snapshot"):
        for hook in reversed(snapshot_restore_py.before):
            hook()
    if event.get("restore"):
        state = random.getstate()
        for hook in snapshot_restore_py.after:
            hook()
        SEEN["random reseeded"] = random.getstate() != state
    return {
        "hooks": [len(snapshot_restore_py.before), len(snapshot_restore_py.after)],
        "model": None if model is None else model.state,
        "training": getattr(model, "training", None),
        "calls": [call["fn"] for call in torch.calls],
        "seeds": torch.seeds,
        "numpy_seeds": numpy.random.seeds,
        "seen": SEEN,
    }
"""

# Stands in for NumPy: only its generator's seed() is called after a restore.
FAKE_NUMPY = """
class _Random(object):
    seeds = 0

    def seed(self, *args):
        _Random.seeds += 1


random = _Random()
"""


class SnapStart(FunctionCase):
    def setUp(self):
        super(SnapStart, self).setUp()
        with open(os.path.join(self.opt, "python", "torch", "__init__.py"), "a") as f:
            f.write(TORCH_ADDITIONS)
        write(os.path.join(self.opt, "python", "snapshot_restore_py.py"), SNAPSHOT_MODULE)
        write(os.path.join(self.task, "snap_handler.py"), HANDLER)
        write(os.path.join(self.opt, "python", "numpy", "__init__.py"), FAKE_NUMPY)
        self.package_model("torchscript", {"kind": "script", "state": STATE})

    def invoke_snap(self, events, **env):
        return self.invoke_ok(events, SERVERLESS_TORCH_HANDLER="snap_handler.handle", **env)

    def test_the_model_is_loaded_and_warmed_up_in_the_before_snapshot_hook(self):
        code, _lines, _out, err = self.invoke([{}], SERVERLESS_TORCH_HANDLER="snap_handler.handle",
                                              AWS_LAMBDA_INITIALIZATION_TYPE="snap-start")
        self.assertEqual(code, 0, err)
        self.assertIn("deferred to before snapshot", err)
        before, after = self.invoke_snap([{}, {"snapshot": True}, {}], AWS_LAMBDA_INITIALIZATION_TYPE="snap-start")[1:]
        # Nothing was loaded during init itself; the hook loaded the model and then warmed up.
        self.assertEqual(before["result"]["calls"], ["jit.load", "ones", "mm"])
        self.assertEqual(after["result"]["model"], STATE)
        self.assertFalse(after["result"]["training"])
        self.assertEqual(after["result"]["hooks"], [2, 2])

    def test_before_the_hook_runs_the_handler_has_no_model_yet(self):
        (line,) = self.invoke_snap([{}], AWS_LAMBDA_INITIALIZATION_TYPE="snap-start")
        self.assertIsNone(line["result"]["model"])
        self.assertEqual(line["result"]["calls"], [])

    def test_a_user_warm_up_hook_registered_at_import_finds_the_model_loaded(self):
        (line,) = self.invoke_snap([{"snapshot": True}], AWS_LAMBDA_INITIALIZATION_TYPE="snap-start")
        self.assertEqual(line["result"]["seen"]["model in my before-snapshot hook"], STATE)

    def test_each_restore_reseeds_torch_python_and_numpy_before_the_users_own_hooks(self):
        lines = self.invoke_snap([{"snapshot": True}, {"restore": True}], AWS_LAMBDA_INITIALIZATION_TYPE="snap-start")
        self.assertEqual(lines[0]["result"]["seeds"], 0)
        self.assertEqual(lines[1]["result"]["seeds"], 1)
        self.assertEqual(lines[1]["result"]["numpy_seeds"], 1)
        self.assertTrue(lines[1]["result"]["seen"]["random reseeded"])
        self.assertEqual(lines[1]["result"]["seen"]["torch seeds when my after-restore hook runs"], 1)

    def test_an_on_demand_init_loads_the_model_at_once_and_registers_nothing(self):
        (line,) = self.invoke_snap([{}], AWS_LAMBDA_INITIALIZATION_TYPE="on-demand")
        self.assertEqual(line["result"]["hooks"], [1, 1], "only the handler module's own")
        self.assertEqual(line["result"]["model"], STATE)
        self.assertEqual(line["result"]["calls"], ["jit.load"])

    def test_without_the_runtime_module_the_model_is_loaded_at_once(self):
        os.remove(os.path.join(self.opt, "python", "snapshot_restore_py.py"))
        write(os.path.join(self.task, "snap_handler.py"),
              "def handle(event, context, model):\n    return {'model': model.state}\n")
        (line,) = self.invoke_snap([{}], AWS_LAMBDA_INITIALIZATION_TYPE="snap-start")
        self.assertEqual(line["result"]["model"], STATE)


if __name__ == "__main__":
    unittest.main()
