"""Classify 8x8 handwritten digits.

Event:    {"inputs": [[64 pixel values, 0..16], ...]}
Response: {"predictions": [digit, ...], "logits": [[10 scores], ...]}

serverless-torch loads model/model.pt once per sandbox and passes the module as
the third argument, so nothing here runs at import time.
"""

import math
import numbers

import torch

FEATURES = 64
MAX_ROWS = 1024


def predict(event, context, model):
    rows = _inputs(event)
    with torch.no_grad():
        logits = model(torch.tensor(rows, dtype=torch.float32))
    return {
        "predictions": logits.argmax(dim=1).tolist(),
        "logits": logits.tolist(),
    }


def _inputs(event):
    if not isinstance(event, dict) or "inputs" not in event:
        raise ValueError('expected an event like {"inputs": [[64 numbers], ...]}')
    rows = event["inputs"]
    if not isinstance(rows, list) or not rows:
        raise ValueError('"inputs" must be a non-empty list of rows')
    if len(rows) > MAX_ROWS:
        raise ValueError(f'"inputs" has {len(rows)} rows; at most {MAX_ROWS} per request')
    for i, row in enumerate(rows):
        if not isinstance(row, list) or len(row) != FEATURES:
            got = f"{len(row)} values" if isinstance(row, list) else type(row).__name__
            raise ValueError(
                f"inputs[{i}] must be a list of {FEATURES} pixel values (an 8x8 image, "
                f"row by row), got {got}"
            )
        for j, value in enumerate(row):
            # bool is an int subclass: true/false in JSON is a client bug, not a pixel.
            if isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(value):
                raise ValueError(f"inputs[{i}][{j}] must be a finite number, got {value!r}")
    return rows
