"""Runtime side of serverless-torch: unpacks compressed dependencies and serves the model."""

from typing import Any


def model() -> Any:
    """The function's model, loaded once per sandbox: what a three-argument handler receives
    (None for a function packaged with model: false).

    For code that is not the handler: a two-argument handler, a SnapStart hook (the model is
    loaded before any hook your module registers runs), a helper module. Raises RuntimeError
    when called before the model is loaded (at import time with SnapStart, where loading waits
    for the before-snapshot hook).
    """
    import sys

    shim = sys.modules.get("serverless_torch.shim")
    if shim is None or not getattr(shim, "MODEL_LOADED", False):
        raise RuntimeError(
            "serverless_torch.model() was called before the model was loaded: call it from the "
            "handler or from a SnapStart hook, not at import time"
        )
    return shim.MODEL
