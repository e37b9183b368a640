"""A function that does not use torch: `torch: false` in serverless.yml keeps
the dependencies and the model out of it, so it stays small and starts fast."""


def main(event, context):
    return {"ok": True}
