"""The loaders added for the models people have, per-function models and both handler forms."""

import hashlib
import json
import os
import unittest

from tests.support import FunctionCase, write

STATE = {"linear.weight": [[1.0, 2.0]], "linear.bias": [0.5]}

# Stand-ins for the packages the new loaders import; each records how it was called.
FAKE_SAFETENSORS = {
    "safetensors/__init__.py": "",
    "safetensors/torch.py": '''
        import json

        import torch


        def load_file(path, device="cpu"):
            torch.calls.append({"fn": "safetensors.load_file", "device": device})
            with open(path) as f:
                return json.load(f)["state"]
    ''',
}

FAKE_EXPORT = '''

class _Program(object):
    def __init__(self, state):
        self.state = state

    def module(self):
        module = nn.Module()
        module.state = self.state
        return module


class export(object):
    @staticmethod
    def load(path):
        calls.append({"fn": "export.load"})
        with open(path) as f:
            return _Program(json.load(f)["state"])
'''

FAKE_TRANSFORMERS = {
    "transformers/__init__.py": '''
        import json
        import os

        __version__ = "5.0.0-fake"
        calls = []


        class _Auto(object):
            @classmethod
            def from_pretrained(cls, path, **kwargs):
                calls.append({"cls": cls.__name__, "kwargs": kwargs, "offline": os.environ.get("HF_HUB_OFFLINE")})
                loaded = cls()
                with open(os.path.join(path, "config.json")) as f:
                    loaded.config = json.load(f)
                return loaded

            def eval(self):
                self.evaluated = True
                return self


        class AutoModelForSequenceClassification(_Auto):
            pass


        class AutoTokenizer(_Auto):
            pass
    ''',
}

# A handler for each form, reporting what it received.
HANDLERS = '''
    import serverless_torch


    def two(event, context):
        model = serverless_torch.model()
        return {"form": 2, "state": getattr(model, "state", model)}


    def three(event, context, model):
        return {"form": 3, "state": getattr(model, "state", model)}


    def one(event):
        return {}


    def transformers_handler(event, context, loaded):
        import transformers
        return {"model": type(loaded.model).__name__, "evaluated": loaded.model.evaluated,
                "tokenizer": type(loaded.tokenizer).__name__, "config": loaded.model.config,
                "calls": transformers.calls}


    def custom_handler(event, context, loaded):
        return loaded
'''


class ModelCase(FunctionCase):
    def setUp(self):
        super(ModelCase, self).setUp()
        write(os.path.join(self.task, "forms.py"), HANDLERS)

    def invoke_form(self, handler, events=({},), **env):
        return self.invoke_ok(list(events), SERVERLESS_TORCH_HANDLER="forms." + handler, **env)


class HandlerForms(ModelCase):
    def test_a_two_argument_handler_is_called_as_lambda_calls_it_and_reaches_the_model(self):
        self.package_model("weights", {"kind": "weights", "state": STATE})
        (line,) = self.invoke_form("two")
        self.assertEqual(line["result"], {"form": 2, "state": STATE})

    def test_a_three_argument_handler_gets_the_model(self):
        self.package_model("weights", {"kind": "weights", "state": STATE})
        (line,) = self.invoke_form("three")
        self.assertEqual(line["result"], {"form": 3, "state": STATE})

    def test_a_one_argument_handler_is_refused_at_init(self):
        self.package_model("weights", {"kind": "weights", "state": STATE})
        code, lines, _out, err = self.invoke([{}], SERVERLESS_TORCH_HANDLER="forms.one")
        self.assertEqual(code, 1, err)
        self.assertEqual(lines[0]["initError"]["errorType"], "InitError")
        self.assertIn("takes 1 positional argument(s)", lines[0]["initError"]["errorMessage"])

    def test_a_function_without_a_model_gets_none_both_ways(self):
        self.package_model("weights", {"kind": "weights", "state": STATE})
        for handler in ("two", "three"):
            (line,) = self.invoke_form(handler, SERVERLESS_TORCH_MODEL=None)
            self.assertIsNone(line["result"]["state"], handler)

    def test_a_model_id_the_manifest_lacks_is_refused(self):
        self.package_model("weights", {"kind": "weights", "state": STATE})
        code, lines, _out, err = self.invoke([{}], SERVERLESS_TORCH_HANDLER="forms.three", SERVERLESS_TORCH_MODEL="mffffffffffff")
        self.assertEqual(code, 1, err)
        self.assertIn("mffffffffffff", lines[0]["initError"]["errorMessage"])

    def test_two_functions_of_one_zip_load_each_its_own_model(self):
        self.package_model("weights", {"kind": "weights", "state": STATE})
        other = {"kind": "weights", "state": {"other": [1.0]}}
        data = json.dumps(other).encode("utf-8")
        write(os.path.join(self.task, "model", "other.pt"), data.decode("utf-8"))
        with open(os.path.join(self.task, "serverless_torch", "manifest.json")) as f:
            models = json.load(f)["models"]
        models["mother0000000"] = {"path": "model/other.pt", "kind": "file", "loader": "weights", "factory": None,
                                   "sha256": hashlib.sha256(data).hexdigest()}
        self.write_manifest(models)
        (first,) = self.invoke_form("three")
        (second,) = self.invoke_form("three", SERVERLESS_TORCH_MODEL="mother0000000")
        self.assertEqual(first["result"]["state"], STATE)
        self.assertEqual(second["result"]["state"], {"other": [1.0]})


class NewLoaders(ModelCase):
    def test_safetensors_go_into_the_factory_module_or_are_handed_over_as_tensors(self):
        for rel, text in FAKE_SAFETENSORS.items():
            write(os.path.join(self.opt, "python", rel), text)
        write(os.path.join(self.task, "net.py"), "import torch\n\ndef build():\n    return torch.nn.Module()\n")
        self.package_model("safetensors", {"state": STATE}, factory="net:build", path="model/head.safetensors")
        (line,) = self.invoke_form("three")
        self.assertEqual(line["result"]["state"], STATE)
        self.package_model("safetensors", {"state": STATE}, path="model/head.safetensors")
        (line,) = self.invoke_form("three")
        self.assertEqual(line["result"]["state"], STATE)

    def test_a_torch_export_program_is_loaded_as_its_module(self):
        with open(os.path.join(self.opt, "python", "torch", "__init__.py"), "a") as f:
            f.write(FAKE_EXPORT)
        self.package_model("export", {"state": STATE}, path="model/program.pt2")
        (line,) = self.invoke_form("three")
        self.assertEqual(line["result"]["state"], STATE)

    def package_directory(self, loader, files, **extra):
        digests = {}
        for rel, text in files.items():
            write(os.path.join(self.task, "models", "minilm", rel), text)
            digests[rel] = hashlib.sha256(text.encode("utf-8")).hexdigest()
        entry = {"path": "models/minilm", "kind": "directory", "loader": loader, "factory": None,
                 "sha256": "0" * 64, "files": digests}
        entry.update(extra)
        self.write_manifest({self.model_id: entry})

    def test_a_hugging_face_directory_is_loaded_offline_weights_only_with_its_tokenizer(self):
        for rel, text in FAKE_TRANSFORMERS.items():
            write(os.path.join(self.opt, "python", rel), text)
        self.package_directory("transformers", {"config.json": '{"num_labels": 3}', "model.safetensors": "weights"},
                               **{"class": "AutoModelForSequenceClassification", "tokenizer": "AutoTokenizer"})
        (line,) = self.invoke_form("transformers_handler")
        result = line["result"]
        self.assertEqual((result["model"], result["evaluated"], result["tokenizer"]), ("AutoModelForSequenceClassification", True, "AutoTokenizer"))
        self.assertEqual(result["config"], {"num_labels": 3})
        model_call = result["calls"][0]
        self.assertEqual(model_call["kwargs"], {"local_files_only": True, "use_safetensors": True})
        self.assertEqual(model_call["offline"], "1")

    def test_a_custom_loader_gets_the_path_and_the_handler_gets_what_it_returns(self):
        write(os.path.join(self.task, "loaders.py"), "import os\n\ndef load(path):\n    return {'files': sorted(os.listdir(path))}\n")
        self.package_directory("custom", {"a.bin": "a", "sub/b.bin": "b"}, load="loaders:load")
        (line,) = self.invoke_form("custom_handler")
        self.assertEqual(line["result"], {"files": ["a.bin", "sub"]})

    def test_a_directory_file_changed_after_packaging_is_refused(self):
        write(os.path.join(self.task, "loaders.py"), "def load(path):\n    return path\n")
        self.package_directory("custom", {"a.bin": "a", "sub/b.bin": "b"}, load="loaders:load")
        write(os.path.join(self.task, "models", "minilm", "sub", "b.bin"), "tampered")
        code, lines, _out, err = self.invoke([{}], SERVERLESS_TORCH_HANDLER="forms.custom_handler")
        self.assertEqual(code, 1, err)
        self.assertIn("sub/b.bin changed since packaging", lines[0]["initError"]["errorMessage"])


if __name__ == "__main__":
    unittest.main()
