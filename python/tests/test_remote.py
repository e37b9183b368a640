"""A model stored in S3, as the shim finds it: fetched (here: already verified in /tmp, as a warm
sandbox or invoke local has it), unpacked when it is a directory, then loaded."""

import hashlib
import io
import json
import os
import unittest
import zipfile

from tests.support import FunctionCase, write

STATE = {"linear.weight": [[1.0, 2.0]], "linear.bias": [0.5]}

HANDLERS = '''
    def three(event, context, model):
        return {"state": getattr(model, "state", model)}
'''


class StoredModels(FunctionCase):
    def setUp(self):
        super(StoredModels, self).setUp()
        write(os.path.join(self.task, "forms.py"), HANDLERS)

    def place(self, data, file):
        """The object as fetch.py leaves it: in /tmp under its sha256, with its verified marker."""
        sha = hashlib.sha256(data).hexdigest()
        directory = os.path.join(self.tmp, "serverless-torch", "models", sha)
        os.makedirs(directory)
        with open(os.path.join(directory, file), "wb") as f:
            f.write(data)
        with open(os.path.join(directory, file + ".verified"), "w") as f:
            json.dump({"sha256": sha, "size": len(data)}, f)
        return {"key": "serverless-torch/models/%s/%s" % (sha, file), "size": len(data), "sha256": sha, "file": file}

    def stored_manifest(self, entry):
        self.write_manifest({self.model_id: entry})

    def test_a_verified_object_in_tmp_is_loaded_without_asking_s3(self):
        data = json.dumps({"kind": "weights", "state": STATE}).encode("utf-8")
        s3 = dict(self.place(data, "model.pt"), archive=False)
        self.stored_manifest({"path": "model/model.pt", "kind": "file", "loader": "weights", "factory": None, "sha256": s3["sha256"], "s3": s3})
        (line,) = self.invoke_ok([{}], SERVERLESS_TORCH_HANDLER="forms.three", SERVERLESS_TORCH_MODEL_BUCKET="deployment-bucket")
        self.assertEqual(line["result"]["state"], STATE)

    def test_a_directory_travels_as_one_zip_unpacked_once_beside_it(self):
        buffer = io.BytesIO()
        with zipfile.ZipFile(buffer, "w") as zf:
            zf.writestr("table.json", json.dumps({"seven": 7}))
            zf.writestr("sub/other.json", "{}")
        s3 = dict(self.place(buffer.getvalue(), "lookup.zip"), archive=True)
        write(os.path.join(self.task, "loaders.py"), "import json, os\n\ndef load(path):\n    return {'files': sorted(os.listdir(path)), 'table': json.load(open(os.path.join(path, 'table.json')))}\n")
        self.stored_manifest({"path": "model/lookup", "kind": "directory", "loader": "custom", "load": "loaders:load", "factory": None,
                              "sha256": "0" * 64, "files": {}, "s3": s3})
        for _ in range(2):
            (line,) = self.invoke_ok([{}], SERVERLESS_TORCH_HANDLER="forms.three", SERVERLESS_TORCH_MODEL_BUCKET="deployment-bucket")
            self.assertEqual(line["result"]["state"], {"files": ["sub", "table.json"], "table": {"seven": 7}})

    def test_without_the_bucket_the_init_says_to_deploy_again(self):
        data = json.dumps({"kind": "weights", "state": STATE}).encode("utf-8")
        s3 = dict(self.place(data, "model.pt"), archive=False)
        self.stored_manifest({"path": "model/model.pt", "kind": "file", "loader": "weights", "factory": None, "sha256": s3["sha256"], "s3": s3})
        code, lines, _out, err = self.invoke([{}], SERVERLESS_TORCH_HANDLER="forms.three")
        self.assertEqual(code, 1, err)
        self.assertIn("SERVERLESS_TORCH_MODEL_BUCKET is not set", lines[0]["initError"]["errorMessage"])


if __name__ == "__main__":
    unittest.main()
