"""Train the digits classifier and write the artifacts the service deploys.

    PYTHONPATH=<a directory holding torch> python3.11 train.py

Writes model/model.pt (a state dict), model/sample.json (three rows to invoke
the function with) and model/expected.json (what the trained model answers for
them, used to check a packaged function end to end).
"""

import csv
import gzip
import json
import os

import torch
from torch import nn

import net

HERE = os.path.dirname(os.path.abspath(__file__))
DATA = os.path.join(HERE, "data", "digits.csv.gz")
OUT = os.path.join(HERE, "model")

SEED = 0
TEST_FRACTION = 0.2
EPOCHS = 60
BATCH = 64
LEARNING_RATE = 1e-2
SAMPLE_ROWS = 3


def load_digits(path):
    with gzip.open(path, "rt", newline="") as f:
        rows = [[float(v) for v in row] for row in csv.reader(f) if row]
    if any(len(row) != net.FEATURES + 1 for row in rows):
        raise ValueError(f"{path}: expected {net.FEATURES} pixels and a label per row")
    x = torch.tensor([row[:-1] for row in rows], dtype=torch.float32)
    y = torch.tensor([int(row[-1]) for row in rows], dtype=torch.long)
    return x, y


def accuracy(model, x, y):
    with torch.no_grad():
        return (model(x).argmax(dim=1) == y).float().mean().item()


def main():
    torch.manual_seed(SEED)
    # One thread: multi-threaded reductions may sum in a different order, and the
    # committed model.pt should be reproducible bit for bit on any machine.
    torch.set_num_threads(1)
    torch.use_deterministic_algorithms(True)

    x, y = load_digits(DATA)
    order = torch.randperm(len(x))
    n_test = int(len(x) * TEST_FRACTION)
    test_idx, train_idx = order[:n_test], order[n_test:]
    x_train, y_train = x[train_idx], y[train_idx]
    x_test, y_test = x[test_idx], y[test_idx]

    model = net.build()
    optimizer = torch.optim.Adam(model.parameters(), lr=LEARNING_RATE)
    loss_fn = nn.CrossEntropyLoss()

    for _ in range(EPOCHS):
        model.train()
        for batch in torch.randperm(len(x_train)).split(BATCH):
            optimizer.zero_grad()
            loss = loss_fn(model(x_train[batch]), y_train[batch])
            loss.backward()
            optimizer.step()

    model.eval()
    print(f"train rows: {len(x_train)}, test rows: {len(x_test)}")
    print(f"train accuracy: {accuracy(model, x_train, y_train):.4f}")
    print(f"test accuracy: {accuracy(model, x_test, y_test):.4f}")

    os.makedirs(OUT, exist_ok=True)
    torch.save(model.state_dict(), os.path.join(OUT, "model.pt"))

    # Rows from the held-out split: the model never saw them during training.
    sample_x = x_test[:SAMPLE_ROWS]
    with torch.no_grad():
        logits = model(sample_x)
    sample = {"inputs": sample_x.tolist()}
    expected = {
        "predictions": logits.argmax(dim=1).tolist(),
        "logits": logits.tolist(),
        "labels": y_test[:SAMPLE_ROWS].tolist(),
    }
    for name, doc in (("sample.json", sample), ("expected.json", expected)):
        with open(os.path.join(OUT, name), "w") as f:
            f.write(dump_rows(doc))


def dump_rows(doc):
    """JSON with one matrix row per line, so the files stay readable and diffable."""
    parts = []
    for key, value in doc.items():
        if value and isinstance(value[0], list):
            rows = ",\n    ".join(json.dumps(row) for row in value)
            parts.append(f"  {json.dumps(key)}: [\n    {rows}\n  ]")
        else:
            parts.append(f"  {json.dumps(key)}: {json.dumps(value)}")
    return "{\n" + ",\n".join(parts) + "\n}\n"


if __name__ == "__main__":
    main()
