"""Driver of bench/s3-download.ts: times fetch.py against an S3 endpoint, one variant per line.

  python3.11 -I bench/s3_download.py setup MIB            puts MIB MiB of random bytes, prints its spec
  python3.11 -I bench/s3_download.py run SPEC TMP VARIANT  one timed download, prints JSON

VARIANT is "single" (one GET of the whole object, read and hashed as it arrives: what a plain
download does) or "PART_MIB:CONCURRENCY[:after]" (fetch_model; ":after" hashes once the file is
complete instead of while it downloads). The endpoint and credentials come from the environment
(AWS_ENDPOINT_URL_S3, AWS_ACCESS_KEY_ID, ...); argv[0]'s directory's ../python/runtime and
$SERVERLESS_TORCH_BOTO3 go on sys.path. Each run is a fresh process, as each cold start is.
"""

import hashlib
import json
import os
import shutil
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path[:0] = [os.path.join(ROOT, "python", "runtime"), os.environ["SERVERLESS_TORCH_BOTO3"]]

from serverless_torch import fetch  # noqa: E402

BUCKET = os.environ.get("SERVERLESS_TORCH_BENCH_BUCKET", "models")
MIB = 1 << 20


def setup(mib):
    client = fetch.s3_client(4)
    digest = hashlib.sha256()
    path = os.path.join(os.environ.get("TMPDIR", "/tmp"), "serverless-torch-bench-object-%d" % os.getpid())
    try:
        with open(path, "wb") as f:
            for _ in range(mib):
                block = os.urandom(MIB)
                digest.update(block)
                f.write(block)
        with open(path, "rb") as f:
            client.put_object(Bucket=BUCKET, Key="bench/model.bin", Body=f)
    finally:
        os.unlink(path)
    print(json.dumps({"bucket": BUCKET, "key": "bench/model.bin", "size": mib * MIB, "sha256": digest.hexdigest(),
                      "file": "model.bin"}))


def single_stream(client, spec, tmp):
    """One unranged GET into a file, hashed as it arrives."""
    path = os.path.join(tmp, "single.bin")
    digest = hashlib.sha256()
    body = client.get_object(Bucket=spec["bucket"], Key=spec["key"])["Body"]
    with open(path, "wb") as f:
        while True:
            block = body.read(fetch.CHUNK_BYTES)
            if not block:
                break
            digest.update(block)
            f.write(block)
    assert digest.hexdigest() == spec["sha256"]


def run(spec, tmp, variant):
    started = time.perf_counter()
    client = fetch.s3_client(16)
    client_seconds = time.perf_counter() - started
    began, cpu_began = time.perf_counter(), time.process_time()
    if variant == "single":
        single_stream(client, spec, tmp)
    else:
        fields = variant.split(":")
        fetch.fetch_model(spec, tmp, client=client, part_bytes=int(fields[0]) * MIB, concurrency=int(fields[1]),
                          hash_while_downloading=fields[2:] != ["after"])
    seconds, cpu_seconds = time.perf_counter() - began, time.process_time() - cpu_began
    shutil.rmtree(os.path.join(tmp, "serverless-torch"), ignore_errors=True)
    for name in os.listdir(tmp):
        os.unlink(os.path.join(tmp, name))
    print(json.dumps({"variant": variant, "seconds": seconds, "cpu_seconds": cpu_seconds, "client_seconds": client_seconds,
                      "bytes": spec["size"]}))


if __name__ == "__main__":
    if sys.argv[1] == "setup":
        setup(int(sys.argv[2]))
    else:
        run(json.loads(sys.argv[2]), sys.argv[3], sys.argv[4])
