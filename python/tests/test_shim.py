import json
import os
import platform
import subprocess
import sys
import textwrap
import unittest

from serverless_torch import unpack
from tests.support import KEY, FunctionCase, pack, write

STATE = {"linear.weight": [[1.0, 2.0]], "linear.bias": [0.5]}


class Loaders(FunctionCase):
    def test_torchscript_is_loaded_on_cpu_in_eval_mode(self):
        self.package_model("torchscript", {"kind": "script", "state": STATE})
        (line,) = self.invoke_ok([{}])
        result = line["result"]
        self.assertEqual((result["model_type"], result["training"], result["state"]), ("ScriptModule", False, STATE))
        self.assertEqual(result["calls"], [{"fn": "jit.load", "map_location": "cpu"}])

    def test_weights_are_handed_over_as_loaded_memory_mapped(self):
        self.package_model("weights", {"kind": "weights", "state": STATE})
        (line,) = self.invoke_ok([{}])
        self.assertEqual(line["result"]["state"], STATE)
        self.assertEqual(line["result"]["calls"], [
            {"fn": "load", "map_location": "cpu", "weights_only": True, "mmap": True}])

    def test_legacy_checkpoints_are_loaded_without_mmap(self):
        self.package_model("weights", {"kind": "weights", "legacy": True, "state": STATE})
        (line,) = self.invoke_ok([{}])
        self.assertEqual(line["result"]["state"], STATE)
        self.assertEqual([c["mmap"] for c in line["result"]["calls"]], [True, None])
        self.assertTrue(all(c["weights_only"] for c in line["result"]["calls"]))

    def test_state_dict_goes_into_the_module_the_factory_builds(self):
        write(os.path.join(self.task, "net", "__init__.py"), "")
        write(os.path.join(self.task, "net", "models.py"), """
            import torch

            class Net(torch.nn.Module):
                pass

            class Builders:
                @staticmethod
                def build():
                    return Net()
        """)
        self.package_model("state_dict", {"kind": "weights", "state": STATE}, factory="net.models:Builders.build")
        (line,) = self.invoke_ok([{}])
        result = line["result"]
        self.assertEqual((result["model_type"], result["training"], result["state"]), ("Net", False, STATE))
        self.assertEqual(result["calls"][0]["weights_only"], True)

    def test_a_factory_that_returns_no_module_is_refused_by_name(self):
        write(os.path.join(self.task, "builders.py"), "def build():\n    return {'not': 'a module'}\n")
        self.package_model("state_dict", {"kind": "weights", "state": STATE}, factory="builders:build")
        code, lines, _out, _err = self.invoke([{}])
        self.assertEqual(code, 1)
        self.assertEqual(lines[0]["initError"]["errorType"], "InitError")
        self.assertIn("builders:build returned dict, not a torch.nn.Module", lines[0]["initError"]["errorMessage"])

    def test_pickled_modules_load_fully_and_are_put_in_eval_mode(self):
        self.package_model("pickle", {"kind": "module", "state": STATE})
        (line,) = self.invoke_ok([{}])
        result = line["result"]
        self.assertEqual((result["model_type"], result["training"], result["state"]), ("Module", False, STATE))
        self.assertEqual(result["calls"][0]["weights_only"], False)

    def test_a_model_file_changed_after_packaging_is_refused(self):
        self.package_model("torchscript", {"kind": "script", "state": STATE}, sha256="0" * 64)
        code, lines, _out, _err = self.invoke([{}])
        self.assertEqual(code, 1)
        message = lines[0]["initError"]["errorMessage"]
        self.assertIn("changed since packaging", message)
        self.assertIn(os.path.join(self.task, "model", "model.pt"), message)
        self.assertIn("expected sha256 " + "0" * 64, message)

    def test_on_lambda_the_model_is_not_hashed_again(self):
        # Lambda checks the function zip itself and unpacks it read-only: with a wrong digest in
        # the manifest the model still loads there (the test above: it is refused elsewhere).
        self.package_model("torchscript", {"kind": "script", "state": STATE}, sha256="0" * 64)
        (line,) = self.invoke_ok([{}], AWS_LAMBDA_RUNTIME_API="127.0.0.1:9001")
        self.assertEqual(line["result"]["state"], STATE)


class Init(FunctionCase):
    def setUp(self):
        super(Init, self).setUp()
        self.package_model("torchscript", {"kind": "script", "state": STATE})

    def test_torch_threads_follow_memory_capped_at_usable_cpus(self):
        cpus = unpack.usable_cpus()
        for memory, expected in (("128", 1), ("1769", 1), ("3538", min(2, cpus)), ("10240", min(6, cpus)),
                                 (None, cpus)):
            (line,) = self.invoke_ok([{}], AWS_LAMBDA_FUNCTION_MEMORY_SIZE=memory)
            self.assertEqual(line["result"]["threads"], expected, memory)

    def test_the_numpy_warning_of_torch_import_is_silenced(self):
        (line,) = self.invoke_ok([{}], PYTHONWARNINGS="error::UserWarning")
        code, _lines, _out, err = self.invoke([{}])
        self.assertNotIn("NumPy", err)
        self.assertIn("serverless-torch init: unpack none | import torch", err)

    def test_handlers_in_subdirectories_are_found_like_lambda_finds_them(self):
        write(os.path.join(self.task, "src", "app", "main.py"), "def predict(event, context, model):\n    return 'deep'\n")
        for spec in ("src/app/main.predict", "src.app.main.predict"):
            (line,) = self.invoke_ok([{}], SERVERLESS_TORCH_HANDLER=spec)
            self.assertEqual(line["result"], "deep")

    def test_a_missing_handler_setting_is_explained(self):
        code, lines, _out, _err = self.invoke([{}], SERVERLESS_TORCH_HANDLER=None)
        self.assertEqual(code, 1)
        self.assertIn("SERVERLESS_TORCH_HANDLER", lines[0]["initError"]["errorMessage"])

    def test_a_missing_handler_function_is_named(self):
        code, lines, _out, _err = self.invoke([{}], SERVERLESS_TORCH_HANDLER="handler.nope")
        self.assertEqual(code, 1)
        self.assertIn("has no function 'nope'", lines[0]["initError"]["errorMessage"])

    def test_errors_importing_user_code_propagate_unchanged(self):
        write(os.path.join(self.task, "broken.py"), "import not_packaged_anywhere\n")
        code, lines, _out, _err = self.invoke([{}], SERVERLESS_TORCH_HANDLER="broken.handle")
        self.assertEqual(code, 1)
        self.assertEqual(lines[0]["initError"]["errorType"], "ModuleNotFoundError")
        self.assertIn("not_packaged_anywhere", lines[0]["initError"]["errorMessage"])

    def test_handler_exceptions_propagate_as_the_same_object(self):
        script = textwrap.dedent("""
            import sys
            sys.path[:0] = [%r, %r]
            from serverless_torch import shim
            import handler
            try:
                shim.handler({"raise": "x"}, None)
            except ValueError as e:
                assert e is handler.LAST, e
                print("same")
        """) % (self.task, os.path.join(self.opt, "python"))
        proc = subprocess.run([sys.executable, "-S", "-s", "-c", script], env=self.env(),
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        self.assertEqual(proc.stdout.decode().strip(), "same", proc.stderr.decode())

    def test_compressed_dependencies_are_unpacked_and_importable_after_the_task_root(self):
        write(os.path.join(self.task, "uses_extra.py"), """
            import extra, sys
            def handle(event, context, model):
                return {"value": extra.VALUE, "file": extra.__file__, "path": sys.path[:3]}
        """)
        pack(self.opt, [("extra.py", "VALUE = 7\n", 0o644)])
        unpacked = os.path.join(self.tmp, "serverless-torch", KEY)
        code, lines, _out, err = self.invoke([{}], SERVERLESS_TORCH_HANDLER="uses_extra.handle")
        self.assertEqual(code, 0, err)
        self.assertEqual(lines[0]["result"]["value"], 7)
        self.assertEqual(lines[0]["result"]["file"], os.path.join(unpacked, "extra.py"))
        self.assertEqual(lines[0]["result"]["path"][:2], [self.task, unpacked])
        self.assertRegex(err, r"unpack \d+\.\d\d s \(0\.0 MiB, 1 files, zlib, threads 1\)")
        code, lines, _out, err = self.invoke([{}], SERVERLESS_TORCH_HANDLER="uses_extra.handle")
        self.assertIn("unpack reused " + unpacked, err)


# What the fake torch needs for a quantized model: layer types, the dtype, the engines and a
# quantize_dynamic that records how it was called (and warns, as torch 2.13 does).
FAKE_QUANTIZATION = {
    "torch/ao/__init__.py": "from torch.ao import quantization\n",
    "torch/ao/quantization.py": """
        import warnings

        import torch


        def quantize_dynamic(model, qconfig_spec=None, dtype=None, inplace=False):
            warnings.warn("torch.ao.quantization is deprecated and will be removed", DeprecationWarning)
            warnings.warn("torch.quantize_per_tensor, torch.quantize_per_channel ... are deprecated", UserWarning)
            torch.calls.append({"fn": "quantize_dynamic", "modules": sorted(c.__name__ for c in qconfig_spec),
                                "dtype": dtype, "inplace": inplace, "engine": torch.backends.quantized.engine})
            model.quantized = True
            return model
    """,
    "torch/backends/__init__.py": "from torch.backends import quantized\n",
    "torch/backends/quantized.py": "engine = 'x86'\nsupported_engines = ['qnnpack', 'onednn', 'x86', 'fbgemm']\n",
}
FAKE_TORCH_ADDITIONS = "\nqint8 = 'torch.qint8'\nfrom torch import ao, backends  # noqa: E402\n"
FAKE_NN_ADDITIONS = "\n\nclass Linear(Module):\n    pass\n\n\nclass LSTM(Module):\n    pass\n\n\nclass GRU(Module):\n    pass\n"

QUANTIZED = {"dtype": "qint8", "modules": ["Linear", "LSTM", "GRU"], "engines": {"aarch64": "qnnpack"}}

ENGINE_HANDLER = """
    import torch


    def handle(event, context, model):
        return {"engine": torch.backends.quantized.engine, "calls": torch.calls,
                "model_type": type(model).__name__, "quantized": getattr(model, "quantized", False),
                "training": model.training, "state": model.state}
"""


class QuantizedModels(FunctionCase):
    def setUp(self):
        super(QuantizedModels, self).setUp()
        torch_dir = os.path.join(self.opt, "python", "torch")
        for rel, text in FAKE_QUANTIZATION.items():
            write(os.path.join(self.opt, "python", rel), text)
        with open(os.path.join(torch_dir, "__init__.py"), "a") as f:
            f.write(FAKE_TORCH_ADDITIONS)
        with open(os.path.join(torch_dir, "nn.py"), "a") as f:
            f.write(FAKE_NN_ADDITIONS)
        write(os.path.join(self.task, "engine_handler.py"), ENGINE_HANDLER)
        write(os.path.join(self.task, "net.py"), "import torch\n\ndef build():\n    return torch.nn.Module()\n")

    def package_quantized(self, loader, saved, quantized, factory=None):
        self.package_model(loader, saved, factory=factory)
        manifest_path = os.path.join(self.task, "serverless_torch", "manifest.json")
        with open(manifest_path) as f:
            manifest = json.load(f)
        manifest["models"][self.model_id]["quantized"] = quantized
        with open(manifest_path, "w") as f:
            json.dump(manifest, f)

    def invoke_engine_handler(self, **env):
        (line,) = self.invoke_ok([{}], SERVERLESS_TORCH_HANDLER="engine_handler.handle", **env)
        return line["result"]

    def test_a_quantized_state_dict_goes_into_the_factory_module_quantized_alike(self):
        self.package_quantized("state_dict", {"kind": "weights", "state": STATE}, QUANTIZED, factory="net:build")
        result = self.invoke_engine_handler()
        self.assertEqual(result["calls"][0], {"fn": "quantize_dynamic", "modules": ["GRU", "LSTM", "Linear"],
                                              "dtype": "torch.qint8", "inplace": True, "engine": "x86"})
        self.assertEqual(result["calls"][1]["fn"], "load")
        self.assertEqual((result["calls"][1]["weights_only"], result["calls"][1]["mmap"]), (True, True))
        self.assertEqual((result["quantized"], result["training"], result["state"]), (True, False, STATE))

    def test_a_float_state_dict_is_not_quantized(self):
        self.package_model("state_dict", {"kind": "weights", "state": STATE}, factory="net:build")
        result = self.invoke_engine_handler()
        self.assertEqual([call["fn"] for call in result["calls"]], ["load"])
        self.assertFalse(result["quantized"])

    def test_the_engine_named_for_this_machine_is_set_before_the_model_loads(self):
        engines = {platform.machine(): "qnnpack"}
        self.package_quantized("state_dict", {"kind": "weights", "state": STATE},
                               dict(QUANTIZED, engines=engines), factory="net:build")
        result = self.invoke_engine_handler()
        self.assertEqual(result["calls"][0]["engine"], "qnnpack")
        self.assertEqual(result["engine"], "qnnpack")

    def test_other_machines_keep_the_default_engine(self):
        self.package_quantized("torchscript", {"kind": "script", "state": STATE},
                               dict(QUANTIZED, engines={"not-" + platform.machine(): "qnnpack"}))
        result = self.invoke_engine_handler()
        self.assertEqual(result["engine"], "x86")
        self.assertEqual([call["fn"] for call in result["calls"]], ["jit.load"])

    def test_an_engine_this_torch_lacks_is_refused_by_name(self):
        self.package_quantized("torchscript", {"kind": "script", "state": STATE},
                               dict(QUANTIZED, engines={platform.machine(): "vulkan"}))
        code, lines, _out, _err = self.invoke([{}], SERVERLESS_TORCH_HANDLER="engine_handler.handle")
        self.assertEqual(code, 1)
        self.assertIn("needs the vulkan engine", lines[0]["initError"]["errorMessage"])

    def test_an_unknown_layer_type_in_the_manifest_is_refused(self):
        self.package_quantized("state_dict", {"kind": "weights", "state": STATE},
                               dict(QUANTIZED, modules=["Linear", "os.system"]), factory="net:build")
        code, lines, _out, _err = self.invoke([{}], SERVERLESS_TORCH_HANDLER="engine_handler.handle")
        self.assertEqual(code, 1)
        self.assertIn("'os.system' as a quantized layer type", lines[0]["initError"]["errorMessage"])

    def test_the_deprecation_warnings_of_quantized_torch_are_silenced(self):
        self.package_quantized("state_dict", {"kind": "weights", "state": STATE}, QUANTIZED, factory="net:build")
        result = self.invoke_engine_handler(PYTHONWARNINGS="error")
        self.assertTrue(result["quantized"])


if __name__ == "__main__":
    unittest.main()
