"""fetch.py against a real S3 server (s3rver on 127.0.0.1) with the real botocore.

Not named test_*.py: `unittest discover` must not pick it up, since it needs the server and
botocore that its harness provides (see s3_support.py). Run it with
`npx mocha dist/test/integration/runtime/fetch.test.js`; without the harness it fails, never skips.
The logic that needs no server (markers, stale files, disk space, error mapping) is in test_fetch.py.
"""

import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import textwrap
import unittest
from unittest import mock

from serverless_torch import fetch
from tests.s3_support import ACCESS_KEY, BUCKET, FaultProxy, S3Server, client, require_harness

MIB = 1 << 20
SERVER = None  # type: S3Server


def setUpModule():
    global SERVER
    require_harness()
    SERVER = S3Server()


def tearDownModule():
    if SERVER is not None:
        SERVER.close()


def put_model(s3, key, data):
    s3.put_object(Bucket=BUCKET, Key=key, Body=data)
    return {"bucket": BUCKET, "key": key, "size": len(data), "sha256": hashlib.sha256(data).hexdigest(),
            "file": os.path.basename(key)}


class ServerCase(unittest.TestCase):
    """A fresh /tmp, and the environment a function gets: an endpoint and credentials only."""

    endpoint_variable = "AWS_ENDPOINT_URL_S3"

    def setUp(self):
        self.tmp = tempfile.mkdtemp(prefix="serverless-torch-fetch-")
        self.addCleanup(shutil.rmtree, self.tmp, True)
        self.s3 = client(SERVER.endpoint)
        self.addCleanup(self.s3.close)
        self.use_endpoint(SERVER.endpoint)

    def use_endpoint(self, endpoint, access_key=ACCESS_KEY):
        env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
        env.update({self.endpoint_variable: endpoint, "AWS_ACCESS_KEY_ID": access_key,
                    "AWS_SECRET_ACCESS_KEY": access_key, "AWS_DEFAULT_REGION": "us-east-1",
                    # No shared config or credentials file of the machine may answer instead.
                    "AWS_CONFIG_FILE": os.devnull, "AWS_SHARED_CREDENTIALS_FILE": os.devnull})
        patcher = mock.patch.dict(os.environ, env, clear=True)
        patcher.start()
        self.addCleanup(patcher.stop)

    def models_dir(self):
        return os.path.join(self.tmp, "serverless-torch", "models")

    def left_in_tmp(self):
        found = []
        for root, _dirs, files in os.walk(self.models_dir()):
            found.extend(os.path.relpath(os.path.join(root, name), self.tmp) for name in files)
        return sorted(found)

    def expect_error(self, code, spec, **options):
        with self.assertRaises(fetch.InitError) as caught:
            fetch.fetch_model(spec, self.tmp, **options)
        self.assertEqual(caught.exception.code, code, str(caught.exception))
        self.assertEqual(self.left_in_tmp(), [], "a failed download left files in /tmp")
        return str(caught.exception)


class FreshDownload(ServerCase):
    def test_a_model_is_downloaded_in_ranged_parts_verified_and_reused(self):
        data = os.urandom(10 * MIB + 12345)
        spec = put_model(self.s3, "serverless-torch/models/x/model.pt", data)
        path = fetch.fetch_model(spec, self.tmp, part_bytes=2 * MIB, concurrency=4)
        self.assertEqual(path, os.path.join(self.models_dir(), spec["sha256"], "model.pt"))
        with open(path, "rb") as f:
            self.assertEqual(f.read(), data)
        self.assertEqual(fetch.last_fetch["parts"], 6)
        self.assertEqual(fetch.last_fetch["concurrency"], 4)
        self.assertEqual(fetch.last_fetch["bytes"], len(data))
        self.assertFalse(fetch.last_fetch["reused"])
        self.assertEqual(self.left_in_tmp(), [os.path.join("serverless-torch", "models", spec["sha256"], name)
                                              for name in ("model.pt", "model.pt.verified")])

        # A second init in the sandbox asks S3 nothing: with the server gone it still succeeds.
        killed = S3Server()
        self.use_endpoint(killed.endpoint)
        killed.close()
        self.assertEqual(fetch.fetch_model(spec, self.tmp), path)
        self.assertTrue(fetch.last_fetch["reused"])

    def test_the_default_parts_and_hashing_after_the_download_give_the_same_file(self):
        data = os.urandom(40 * MIB)
        spec = put_model(self.s3, "m/big.bin", data)
        for hash_while_downloading in (True, False):
            shutil.rmtree(self.models_dir(), ignore_errors=True)
            path = fetch.fetch_model(spec, self.tmp, hash_while_downloading=hash_while_downloading)
            self.assertEqual(fetch.last_fetch["parts"], 3)
            self.assertEqual(fetch.last_fetch["part_bytes"], fetch.PART_BYTES)
            with open(path, "rb") as f:
                self.assertEqual(hashlib.sha256(f.read()).hexdigest(), spec["sha256"])

    def test_an_empty_model_is_one_unranged_get(self):
        spec = put_model(self.s3, "m/empty.pt", b"")
        path = fetch.fetch_model(spec, self.tmp)
        self.assertEqual(os.path.getsize(path), 0)
        self.assertEqual(fetch.last_fetch["parts"], 1)


class GenericEndpointVariable(ServerCase):
    endpoint_variable = "AWS_ENDPOINT_URL"

    def test_aws_endpoint_url_is_honoured_too(self):
        spec = put_model(self.s3, "m/generic.pt", b"weights" * 1000)
        with open(fetch.fetch_model(spec, self.tmp), "rb") as f:
            self.assertEqual(f.read(), b"weights" * 1000)


class WhatS3Refuses(ServerCase):
    def test_a_deleted_object_is_missing_with_bucket_key_and_the_fix(self):
        spec = put_model(self.s3, "m/deleted.pt", os.urandom(3 * MIB))
        self.s3.delete_object(Bucket=BUCKET, Key="m/deleted.pt")
        message = self.expect_error(fetch.TORCH_MODEL_OBJECT_MISSING, spec, part_bytes=MIB)
        self.assertIn("s3://models/m/deleted.pt", message)
        self.assertIn("NoSuchKey", message)
        self.assertIn("deploy the service again", message)

    def test_a_missing_bucket_is_named(self):
        spec = dict(put_model(self.s3, "m/a.pt", b"a"), bucket="no-such-bucket")
        message = self.expect_error(fetch.TORCH_MODEL_OBJECT_MISSING, spec)
        self.assertIn("bucket no-such-bucket", message)

    def test_bytes_other_than_the_packaged_ones_are_refused_with_both_digests(self):
        packaged = os.urandom(5 * MIB)
        spec = put_model(self.s3, "m/replaced.pt", packaged)
        served = put_model(self.s3, "m/replaced.pt", os.urandom(len(packaged)))
        message = self.expect_error(fetch.TORCH_MODEL_HASH_MISMATCH, spec, part_bytes=2 * MIB)
        self.assertIn(spec["sha256"], message)
        self.assertIn(served["sha256"], message)

    def test_an_object_of_another_size_is_refused_at_its_first_part(self):
        spec = put_model(self.s3, "m/resized.pt", os.urandom(4 * MIB))
        self.s3.put_object(Bucket=BUCKET, Key="m/resized.pt", Body=os.urandom(MIB))
        message = self.expect_error(fetch.TORCH_MODEL_HASH_MISMATCH, spec, part_bytes=MIB)
        self.assertIn("is 1048576 bytes, the package expects 4194304 bytes", message)

    def test_credentials_the_server_does_not_know_are_refused(self):
        # s3rver checks the access key (as S3 does): 403 InvalidAccessKeyId.
        spec = put_model(self.s3, "m/guarded.pt", b"x" * 100)
        self.use_endpoint(SERVER.endpoint, access_key="AKIAEXAMPLEEXAMPLE00")
        message = self.expect_error(fetch.TORCH_MODEL_ACCESS_DENIED, spec)
        self.assertIn("InvalidAccessKeyId", message)


class ThroughAProxy(ServerCase):
    """S3's own answers (403, 503 SlowDown, a connection cut mid-body) from a proxy on 127.0.0.1."""

    def setUp(self):
        super(ThroughAProxy, self).setUp()
        self.proxy = FaultProxy(SERVER.port)
        self.addCleanup(self.proxy.close)
        self.use_endpoint(self.proxy.endpoint)
        # Backoff shortened: what is tested is that a part is tried again, not how long it waits.
        for name, value in (("BACKOFF_SECONDS", 0.01), ("BACKOFF_CAP_SECONDS", 0.02)):
            patcher = mock.patch.object(fetch, name, value)
            patcher.start()
            self.addCleanup(patcher.stop)

    def test_access_denied_names_the_missing_permission(self):
        spec = put_model(self.s3, "serverless-torch/models/abc/model.pt", os.urandom(MIB))
        self.proxy.fail(("error", 403, "AccessDenied", "Access Denied"), times=None)
        message = self.expect_error(fetch.TORCH_MODEL_ACCESS_DENIED, spec)
        self.assertIn("s3:GetObject on arn:aws:s3:::models/serverless-torch/models/abc/model.pt", message)
        self.assertEqual(len(self.proxy.gets()), 1, "a refusal is not worth another try")

    def test_throttling_is_retried_with_backoff_until_it_passes(self):
        data = os.urandom(3 * MIB)
        spec = put_model(self.s3, "m/throttled.pt", data)
        self.proxy.fail(("error", 503, "SlowDown", "Please reduce your request rate."), times=3)
        with open(fetch.fetch_model(spec, self.tmp, part_bytes=MIB, concurrency=1), "rb") as f:
            self.assertEqual(f.read(), data)
        self.assertEqual(fetch.last_fetch["retries"], 3)
        self.assertEqual(len(self.proxy.gets()), 6)

    def test_throttling_that_does_not_pass_is_reported_after_every_attempt(self):
        spec = put_model(self.s3, "m/always-throttled.pt", os.urandom(MIB))
        self.proxy.fail(("error", 503, "SlowDown", "Please reduce your request rate."), times=None)
        message = self.expect_error(fetch.TORCH_MODEL_DOWNLOAD_FAILED, spec)
        self.assertEqual(len(self.proxy.gets()), fetch.ATTEMPTS)
        self.assertIn("failed %d times" % fetch.ATTEMPTS, message)
        self.assertIn("SlowDown", message)

    def test_a_connection_cut_mid_part_is_retried_and_the_file_is_whole(self):
        data = os.urandom(4 * MIB)
        spec = put_model(self.s3, "m/dropped.pt", data)
        self.proxy.fail(("drop", 300000), times=2)
        with open(fetch.fetch_model(spec, self.tmp, part_bytes=2 * MIB, concurrency=2), "rb") as f:
            self.assertEqual(f.read(), data)
        self.assertEqual(fetch.last_fetch["retries"], 2)


class ServerKilledMidDownload(ServerCase):
    def test_the_dropped_connection_is_retried_then_reported_and_nothing_is_left(self):
        server = S3Server()
        self.addCleanup(server.close)
        s3 = client(server.endpoint)
        self.addCleanup(s3.close)
        spec = put_model(s3, "m/interrupted.pt", os.urandom(24 * MIB))
        self.use_endpoint(server.endpoint)
        write_at = fetch._write_at

        def kill_after_the_first_block(fd, data, offset):
            write_at(fd, data, offset)
            if server.process.poll() is None:
                server.kill()

        with mock.patch.object(fetch, "_write_at", kill_after_the_first_block):
            message = self.expect_error(fetch.TORCH_MODEL_DOWNLOAD_FAILED, spec, part_bytes=4 * MIB, concurrency=2)
        self.assertIn("failed %d times" % fetch.ATTEMPTS, message)
        self.assertIn("s3://models/m/interrupted.pt", message)

    def test_a_server_back_within_the_backoff_completes_the_download(self):
        data_dir = tempfile.mkdtemp(prefix="serverless-torch-s3rver-")
        self.addCleanup(shutil.rmtree, data_dir, True)
        server = S3Server(data_dir)
        s3 = client(server.endpoint)
        data = os.urandom(8 * MIB)
        spec = put_model(s3, "m/restarted.pt", data)
        s3.close()
        self.use_endpoint(server.endpoint)
        restarted = []
        write_at = fetch._write_at

        def restart_after_the_first_block(fd, block, offset):
            write_at(fd, block, offset)
            if not restarted:
                restarted.append(True)
                server.kill()
                restarted.append(S3Server(data_dir, port=server.port))

        # Long enough for node to start s3rver again on this busy machine.
        with mock.patch.object(fetch, "BACKOFF_SECONDS", 1.0), mock.patch.object(fetch, "BACKOFF_CAP_SECONDS", 8.0), \
                mock.patch.object(fetch, "_write_at", restart_after_the_first_block):
            path = fetch.fetch_model(spec, self.tmp, part_bytes=2 * MIB, concurrency=2)
        restarted[1].close()
        server.close()
        with open(path, "rb") as f:
            self.assertEqual(f.read(), data)
        self.assertGreaterEqual(fetch.last_fetch["retries"], 1)


# Runs inside a private mount namespace with a small tmpfs as /tmp; prints what happened.
TMPFS_CHILD = textwrap.dedent('''
    import json, os, sys, threading
    sys.path[:0] = json.loads(sys.argv[2])
    from serverless_torch import fetch
    spec, tmp, filler_bytes = json.loads(sys.argv[1]), sys.argv[3], int(sys.argv[4])
    write_at, filled = fetch._write_at, []

    def fill_tmp_meanwhile(fd, data, offset):
        if filler_bytes and not filled:
            filled.append(True)
            with open(os.path.join(tmp, "other-files"), "wb") as f:
                f.write(b"\\0" * filler_bytes)
        write_at(fd, data, offset)

    fetch._write_at = fill_tmp_meanwhile
    try:
        fetch.fetch_model(spec, tmp, part_bytes=1 << 20, concurrency=2)
        result = {"code": None}
    except fetch.InitError as e:
        result = {"code": e.code, "message": str(e)}
    result["left"] = sorted(os.path.join(r, n) for r, _, names in os.walk(os.path.join(tmp, "serverless-torch"))
                            for n in names)
    print(json.dumps(result))
''')


class TmpTooSmall(ServerCase):
    """On a real 16 MiB filesystem (tmpfs in a private mount namespace, gone when the child exits)."""

    def run_in_small_tmp(self, spec, filler_bytes=0):
        mount_point = os.path.join(self.tmp, "small-tmp")
        os.mkdir(mount_point)
        paths = [os.path.join(os.path.dirname(fetch.__file__), os.pardir), os.environ.get("SERVERLESS_TORCH_TEST_BOTO3", "")]
        script = 'mount -t tmpfs -o size=16m tmpfs "$1" && shift && exec "$@"'
        proc = subprocess.run(
            ["unshare", "--mount", "--map-root-user", "sh", "-c", script, "sh", mount_point,
             sys.executable, "-c", TMPFS_CHILD, json.dumps(spec), json.dumps(paths), mount_point, str(filler_bytes)],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=120)
        self.assertEqual(proc.returncode, 0, proc.stderr.decode())
        return json.loads(proc.stdout.decode().strip().splitlines()[-1])

    def test_a_model_larger_than_tmp_is_refused_before_any_request_with_the_size_to_set(self):
        spec = put_model(self.s3, "m/huge.pt", os.urandom(20 * MIB))
        result = self.run_in_small_tmp(spec)
        self.assertEqual(result["code"], fetch.TORCH_TMP_TOO_SMALL, result)
        self.assertIn("needs %d bytes" % (20 * MIB), result["message"])
        self.assertRegex(result["message"], r"only \d+ bytes \([\d.]+ MiB\) of 16.0 MiB are free")
        self.assertIn("ephemeralStorageSize to at least 84 (MB)", result["message"])
        self.assertEqual(result["left"], [])

    def test_tmp_filling_up_during_the_download_is_reported_and_cleaned_up(self):
        spec = put_model(self.s3, "m/squeezed.pt", os.urandom(12 * MIB))
        result = self.run_in_small_tmp(spec, filler_bytes=8 * MIB)
        self.assertEqual(result["code"], fetch.TORCH_TMP_TOO_SMALL, result)
        self.assertIn("other files took the space while it downloaded", result["message"])
        # Measured once the partial download is gone: 8 MiB of other files + 12 MiB + 64 MB of room.
        self.assertIn("ephemeralStorageSize to at least 84 (MB)", result["message"])
        self.assertEqual(result["left"], [], "the partial download was not removed")


if __name__ == "__main__":
    unittest.main()
