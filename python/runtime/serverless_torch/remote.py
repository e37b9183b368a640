"""A model stored in the deployment bucket: fetched into /tmp in the background while the init
unpacks the dependencies and imports torch (one waits on the network, the other on the CPU).

Layout: /tmp/serverless-torch/models/<sha256>/<file>, checked by fetch.py; a directory travels as
one zip of its files (<name>.zip), unpacked once beside it into <name>/.
"""

import os
import secrets
import shutil
import threading
import zipfile
from typing import Any, Dict, Optional

from serverless_torch import fetch as _fetch
from serverless_torch.unpack import safe_relpath

# The deployment bucket the model is in: the template gives it (a Ref, or the configured bucket).
BUCKET_ENV = "SERVERLESS_TORCH_MODEL_BUCKET"
# Beside the unpacked directory, not in it: a custom loader may list the directory.
COMPLETE_SUFFIX = ".complete"


class Download(object):
    """The model's download, on a thread of its own from the start of the init."""

    def __init__(self, model: Dict[str, Any], tmp_dir: str) -> None:
        self._path: Optional[str] = None
        self._error: Optional[BaseException] = None
        self._thread = threading.Thread(target=self._run, args=(model, tmp_dir), name="serverless-torch-fetch", daemon=True)
        self._thread.start()

    def _run(self, model: Dict[str, Any], tmp_dir: str) -> None:
        try:
            self._path = local_path(model, tmp_dir)
        except BaseException as error:  # handed to the init, which raises it
            self._error = error

    def path(self) -> str:
        """The local path of the verified model; raises what the download raised."""
        self._thread.join()
        if self._error is not None:
            raise self._error
        assert self._path is not None
        return self._path


def local_path(model: Dict[str, Any], tmp_dir: str) -> str:
    stored = model["s3"]
    bucket = os.environ.get(BUCKET_ENV)
    if not bucket:
        raise _fetch.InitError(
            "TORCH_BAD_MANIFEST",
            "the model %s is stored in S3 but %s is not set: deploy the function with serverless-torch again"
            % (model.get("path"), BUCKET_ENV),
        )
    spec = {key: stored[key] for key in ("key", "size", "sha256", "file")}
    spec["bucket"] = bucket
    path = _fetch.fetch_model(spec, tmp_dir)
    return unpack_archive(path) if stored.get("archive") else path


def unpack_archive(archive: str) -> str:
    """The directory a model's zip unpacks to, beside it; unpacked once, published whole."""
    target = archive[: -len(".zip")] if archive.endswith(".zip") else archive + ".d"
    marker = target + COMPLETE_SUFFIX
    if os.path.isfile(marker) and os.path.isdir(target):
        return target
    partial = "%s.partial-%d-%s" % (target, os.getpid(), secrets.token_hex(6))
    try:
        with zipfile.ZipFile(archive) as zf:
            for info in zf.infolist():
                rel = safe_relpath(info.filename)
                if info.is_dir():
                    continue
                destination = os.path.join(partial, *rel.split("/"))
                os.makedirs(os.path.dirname(destination), exist_ok=True)
                with zf.open(info) as src, open(destination, "wb") as dst:
                    shutil.copyfileobj(src, dst, 1 << 20)
        shutil.rmtree(target, ignore_errors=True)
        os.rename(partial, target)
        open(marker, "w").close()
    except BaseException:
        shutil.rmtree(partial, ignore_errors=True)
        raise
    return target
