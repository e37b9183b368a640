"""What the code that runs inside Lambda may deserialise: never event data, only the packaged model."""

import ast
import os
import unittest

from tests.support import PACKAGE_DIR

# Calls that turn bytes into objects by running code, or run code outright.
FORBIDDEN = {
    ("pickle", "load"), ("pickle", "loads"), ("pickle", "Unpickler"),
    ("marshal", "load"), ("marshal", "loads"), ("dill", "loads"), ("shelve", "open"),
    ("yaml", "load"), ("yaml", "unsafe_load"), ("numpy", "load"),
}
FORBIDDEN_BUILTINS = {"eval", "exec", "compile", "__import__"}
MODEL_LOADS = {("torch", "load"), ("jit", "load"), ("export", "load"), (None, "load_file")}


def _calls(path):
    with open(path) as f:
        tree = ast.parse(f.read(), path)
    parents = {}
    for node in ast.walk(tree):
        for child in ast.iter_child_nodes(node):
            parents[child] = node
    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            function = node
            while function in parents and not isinstance(function, ast.FunctionDef):
                function = parents[function]
            yield node, getattr(function, "name", "<module>")


def _name(func):
    if isinstance(func, ast.Name):
        return (None, func.id)
    if isinstance(func, ast.Attribute):
        owner = func.value
        return (owner.attr if isinstance(owner, ast.Attribute) else getattr(owner, "id", None), func.attr)
    return (None, None)


class NothingFromTheEventIsDeserialised(unittest.TestCase):
    def sources(self):
        return sorted(os.path.join(PACKAGE_DIR, name) for name in os.listdir(PACKAGE_DIR) if name.endswith(".py"))

    def test_no_deserialiser_that_runs_code_is_called(self):
        for path in self.sources():
            for call, function in _calls(path):
                owner, name = _name(call.func)
                self.assertNotIn((owner, name), FORBIDDEN, "%s: %s() calls %s.%s" % (path, function, owner, name))
                if isinstance(call.func, ast.Name):
                    self.assertNotIn(name, FORBIDDEN_BUILTINS, "%s: %s() calls %s" % (path, function, name))

    def test_torch_loads_only_the_packaged_model_file(self):
        # The model path comes from manifest.json, joined to the task root; nothing else reaches torch.load.
        seen = []
        for path in self.sources():
            for call, function in _calls(path):
                if _name(call.func) in MODEL_LOADS:
                    seen.append(function)
                    self.assertTrue(call.args and isinstance(call.args[0], ast.Name) and call.args[0].id == "path",
                                    "%s: %s() loads something other than the model path" % (path, function))
                    self.assertIn(function, ("_weights_only_load", "_load_model", "load_model", "_load_safetensors"), path)
        self.assertTrue(seen, "no torch.load found: the test no longer looks at the right code")

    def test_the_handler_gets_the_event_as_the_runtime_parsed_it(self):
        # shim.handler passes the event straight through: it never decodes, unpickles or evaluates it.
        with open(os.path.join(PACKAGE_DIR, "shim.py")) as f:
            tree = ast.parse(f.read())
        handler = next(node for node in tree.body if isinstance(node, ast.FunctionDef) and node.name == "handler")
        calls = [node.value for node in ast.walk(handler) if isinstance(node, ast.Return)]
        self.assertEqual(len(calls), 2, "a return for each handler form")
        self.assertEqual(sorted([arg.id for arg in call.args] for call in calls), [["event", "context"], ["event", "context", "MODEL"]])
        self.assertTrue(all(call.func.id == "_user_handler" for call in calls))


if __name__ == "__main__":
    unittest.main()
