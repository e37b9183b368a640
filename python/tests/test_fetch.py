"""fetch.py without a server: markers, stale files, disk space, retries and how failures read.

An in-memory S3 stands in for botocore here, so these run under every Python with nothing
installed. The same code against a real S3 server and the real botocore: s3_fetch.py.
"""

import collections
import errno
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import types
import unittest
from unittest import mock

from serverless_torch import fetch
from tests.support import PACKAGE_DIR

MIB = 1 << 20
Usage = collections.namedtuple("Usage", "total used free")


class FakeClientError(Exception):
    """What botocore's ClientError carries: the parsed S3 error document and the status."""

    def __init__(self, status, code, message="", **details):
        super(FakeClientError, self).__init__("An error occurred (%s)" % code)
        error = {"Code": code, "Message": message}
        error.update(details)
        self.response = {"Error": error, "ResponseMetadata": {"HTTPStatusCode": status}}


class NoCredentialsError(Exception):
    """Named like botocore's, which is all fetch.py goes by."""


class FakeBody(object):
    def __init__(self, data, cut_at=None):
        self.data, self.position, self.cut_at, self.closed = data, 0, cut_at, False

    def read(self, amount):
        end = min(self.position + amount, len(self.data) if self.cut_at is None else self.cut_at)
        block, self.position = self.data[self.position:end], end
        return block

    def close(self):
        self.closed = True


class FakeS3(object):
    """Ranged GetObject over a dict, answering S3's way; `failures` are raised first, one per call."""

    def __init__(self, objects=None):
        self.objects = dict(objects or {})
        self.failures = []
        self.ranges = []
        self.bodies = []
        self.lock = threading.Lock()

    def get_object(self, Bucket, Key, Range=None):
        with self.lock:
            self.ranges.append(Range)
            failure = self.failures.pop(0) if self.failures else None
        if isinstance(failure, BaseException):
            raise failure
        data = self.objects.get((Bucket, Key))
        if data is None:
            raise FakeClientError(404, "NoSuchKey", "The specified key does not exist.", Key=Key)
        if Range is None:
            body = FakeBody(data)
            response = {"Body": body, "ContentLength": len(data)}
        else:
            start, end = (int(n) for n in Range[len("bytes="):].split("-"))
            if start >= len(data):
                raise FakeClientError(416, "InvalidRange", "The requested range is not satisfiable",
                                      ActualObjectSize=str(len(data)))
            end = min(end, len(data) - 1)
            body = FakeBody(data[start:end + 1], cut_at=failure)
            response = {"Body": body, "ContentLength": end + 1 - start,
                        "ContentRange": "bytes %d-%d/%d" % (start, end, len(data))}
        self.bodies.append(body)
        return response


class Unreachable(object):
    """A client that must not be used."""

    def get_object(self, **request):
        raise AssertionError("S3 was asked for %r" % (request,))


def spec_of(data, key="serverless-torch/models/abc/model.pt", file="model.pt"):
    return {"bucket": "deploy-bucket", "key": key, "size": len(data), "sha256": hashlib.sha256(data).hexdigest(),
            "file": file}


def dead_pid():
    for pid in range(4000000, 1, -1):
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return pid
        except OSError:
            continue
    raise AssertionError("every process id is in use")


class FetchCase(unittest.TestCase):
    def setUp(self):
        self.tmp = tempfile.mkdtemp(prefix="serverless-torch-fetch-")
        self.addCleanup(shutil.rmtree, self.tmp, True)
        for name, value in (("BACKOFF_SECONDS", 0.001), ("BACKOFF_CAP_SECONDS", 0.002)):
            patcher = mock.patch.object(fetch, name, value)
            patcher.start()
            self.addCleanup(patcher.stop)

    def model_dir(self, spec):
        return os.path.join(self.tmp, "serverless-torch", "models", spec["sha256"])

    def files(self):
        found = []
        for root, _dirs, names in os.walk(os.path.join(self.tmp, "serverless-torch")):
            found.extend(os.path.relpath(os.path.join(root, name), self.tmp) for name in names)
        return sorted(found)

    def s3_with(self, data, spec):
        return FakeS3({(spec["bucket"], spec["key"]): data})

    def expect_error(self, code, spec, client, **options):
        with self.assertRaises(fetch.InitError) as caught:
            fetch.fetch_model(spec, self.tmp, client=client, **options)
        self.assertEqual(caught.exception.code, code, str(caught.exception))
        self.assertEqual(self.files(), [], "a failed fetch left files behind")
        return str(caught.exception)


class Download(FetchCase):
    def test_parts_tile_the_object_and_land_at_their_offsets(self):
        data = os.urandom(10 * MIB + 7)
        spec = spec_of(data)
        s3 = self.s3_with(data, spec)
        path = fetch.fetch_model(spec, self.tmp, client=s3, part_bytes=3 * MIB, concurrency=3)
        with open(path, "rb") as f:
            self.assertEqual(f.read(), data)
        self.assertEqual(sorted(s3.ranges), sorted(
            ["bytes=0-3145727", "bytes=3145728-6291455", "bytes=6291456-9437183", "bytes=9437184-10485766"]))
        self.assertTrue(all(body.closed for body in s3.bodies))
        self.assertEqual((fetch.last_fetch["parts"], fetch.last_fetch["concurrency"]), (4, 3))
        self.assertEqual(self.files(), [os.path.join("serverless-torch", "models", spec["sha256"], name)
                                        for name in ("model.pt", "model.pt.verified")])

    def test_hashing_while_downloading_or_after_gives_the_same_verdict(self):
        data = os.urandom(5 * MIB)
        spec = spec_of(data)
        for hash_while_downloading in (True, False):
            shutil.rmtree(os.path.join(self.tmp, "serverless-torch"), ignore_errors=True)
            path = fetch.fetch_model(spec, self.tmp, client=self.s3_with(data, spec), part_bytes=MIB,
                                     hash_while_downloading=hash_while_downloading)
            self.assertTrue(fetch.is_verified(os.path.dirname(path), spec))
            shutil.rmtree(os.path.join(self.tmp, "serverless-torch"))
            wrong = dict(spec, sha256="0" * 64)
            self.expect_error(fetch.TORCH_MODEL_HASH_MISMATCH, wrong, self.s3_with(data, wrong), part_bytes=MIB,
                              hash_while_downloading=hash_while_downloading)

    def test_an_object_of_another_size_is_refused_even_when_the_packaged_bytes_are_its_start(self):
        data = os.urandom(2 * MIB)
        spec = spec_of(data[:MIB])
        message = self.expect_error(fetch.TORCH_MODEL_HASH_MISMATCH, spec, self.s3_with(data, spec), part_bytes=MIB)
        self.assertIn("is 2097152 bytes, the package expects 1048576 bytes", message)

    def test_concurrency_never_exceeds_the_number_of_parts(self):
        plan = fetch._Plan(spec_of(b"x" * 10), part_bytes=4, concurrency=16, hash_while_downloading=True)
        self.assertEqual(plan.parts, [(0, 4), (4, 4), (8, 2)])
        self.assertEqual(plan.concurrency, 3)
        self.assertEqual(fetch._Plan(spec_of(b""), 4, 16, True).parts, [(0, 0)])

    def test_an_empty_model_is_asked_for_without_a_range(self):
        spec = spec_of(b"")
        s3 = self.s3_with(b"", spec)
        self.assertEqual(os.path.getsize(fetch.fetch_model(spec, self.tmp, client=s3)), 0)
        self.assertEqual(s3.ranges, [None])

    def test_the_init_log_phrase_has_units(self):
        data = os.urandom(2 * MIB)
        spec = spec_of(data)
        fetch.fetch_model(spec, self.tmp, client=self.s3_with(data, spec), part_bytes=MIB)
        self.assertRegex(fetch.describe(fetch.last_fetch),
                         r"^\d+\.\d\d s \(2\.0 MiB at \d+ MiB/s, 2 parts of 1 MiB, 2 streams, 0 retries, client 0\.00 s\)$")
        fetch.fetch_model(spec, self.tmp, client=Unreachable())
        self.assertEqual(fetch.describe(fetch.last_fetch), "reused %s" % os.path.join(self.model_dir(spec), "model.pt"))


class Reuse(FetchCase):
    def fetched(self, data=b"weights" * 100):
        spec = spec_of(data)
        path = fetch.fetch_model(spec, self.tmp, client=self.s3_with(data, spec))
        return spec, path

    def test_a_verified_file_is_reused_without_asking_s3(self):
        spec, path = self.fetched()
        before = os.stat(path)
        self.assertEqual(fetch.fetch_model(spec, self.tmp, client=Unreachable()), path)
        self.assertTrue(fetch.last_fetch["reused"])
        self.assertEqual(os.stat(path).st_ino, before.st_ino)

    def test_a_file_without_its_marker_is_never_trusted(self):
        spec, path = self.fetched()
        os.unlink(path + fetch.MARKER_SUFFIX)
        with open(path, "wb") as f:
            f.write(b"x" * spec["size"])  # right size, wrong bytes: what a killed process could leave
        s3 = self.s3_with(b"weights" * 100, spec)
        fetch.fetch_model(spec, self.tmp, client=s3)
        self.assertFalse(fetch.last_fetch["reused"])
        with open(path, "rb") as f:
            self.assertEqual(f.read(), b"weights" * 100)

    def test_a_marker_for_other_bytes_or_a_file_of_another_size_means_downloading_again(self):
        for damage in ("marker", "size"):
            spec, path = self.fetched()
            if damage == "marker":
                with open(path + fetch.MARKER_SUFFIX, "w") as f:
                    json.dump({"sha256": "1" * 64, "size": spec["size"]}, f)
            else:
                with open(path, "ab") as f:
                    f.write(b"more")
            s3 = self.s3_with(b"weights" * 100, spec)
            fetch.fetch_model(spec, self.tmp, client=s3)
            self.assertEqual(len(s3.ranges), 1, damage)
            self.assertEqual(os.path.getsize(path), spec["size"])

    def test_temporaries_of_dead_processes_are_removed_and_live_ones_kept(self):
        spec, _path = self.fetched()
        other = os.path.join(self.tmp, "serverless-torch", "models", "f" * 64)
        os.makedirs(other)
        dead = [os.path.join(self.model_dir(spec), ".download-%d-aaaaaaaaaaaa" % dead_pid()),
                os.path.join(other, ".download-%d-bbbbbbbbbbbb" % dead_pid()),
                # Our own pid is a runtime restarted in the same sandbox: its predecessor's file.
                os.path.join(other, ".download-%d-cccccccccccc" % os.getpid())]
        alive = os.path.join(other, ".download-%d-dddddddddddd" % os.getppid())
        for path in dead + [alive]:
            with open(path, "wb") as f:
                f.write(b"partial")
        data = b"another model"
        fetch.fetch_model(spec_of(data), self.tmp, client=self.s3_with(data, spec_of(data)))
        self.assertEqual([p for p in dead + [alive] if os.path.exists(p)], [alive])


class DiskSpace(FetchCase):
    def test_a_model_that_does_not_fit_is_refused_before_any_request(self):
        spec = spec_of(b"")
        spec["size"] = 200 * MIB
        with mock.patch.object(fetch.shutil, "disk_usage", return_value=Usage(512 * MIB, 412 * MIB, 100 * MIB)):
            message = self.expect_error(fetch.TORCH_TMP_TOO_SMALL, spec, Unreachable())
        self.assertIn("needs 209715200 bytes (200.0 MiB) in %s" % self.tmp, message)
        self.assertIn("only 104857600 bytes (100.0 MiB) of 512.0 MiB are free", message)
        # 412 MiB in use stays in use, plus the model, plus 64 MB of room.
        self.assertIn("ephemeralStorageSize to at least 676 (MB)", message)

    def test_a_model_beyond_lambdas_largest_tmp_says_so(self):
        spec = spec_of(b"")
        spec["size"] = 11000 * MIB
        with mock.patch.object(fetch.shutil, "disk_usage", return_value=Usage(10240 * MIB, 0, 10240 * MIB)):
            message = self.expect_error(fetch.TORCH_TMP_TOO_SMALL, spec, Unreachable())
        self.assertIn("more than Lambda's largest ephemeralStorageSize (10240 MB)", message)

    def test_a_model_that_fits_exactly_is_fetched(self):
        data = os.urandom(MIB)
        spec = spec_of(data)
        with mock.patch.object(fetch.shutil, "disk_usage", return_value=Usage(MIB, 0, MIB)):
            fetch.fetch_model(spec, self.tmp, client=self.s3_with(data, spec))

    def test_a_full_disk_during_the_download_is_reported_as_tmp_too_small(self):
        data = os.urandom(2 * MIB)
        spec = spec_of(data)
        full = OSError(errno.ENOSPC, "No space left on device")
        with mock.patch.object(fetch, "_write_at", side_effect=full):
            message = self.expect_error(fetch.TORCH_TMP_TOO_SMALL, spec, self.s3_with(data, spec), part_bytes=MIB)
        self.assertIn("other files took the space while it downloaded", message)


class Retries(FetchCase):
    def test_dropped_connections_and_throttling_are_retried_per_part(self):
        data = os.urandom(2 * MIB)
        spec = spec_of(data)
        s3 = self.s3_with(data, spec)
        s3.failures = [ConnectionResetError(104, "Connection reset by peer"),
                       FakeClientError(503, "SlowDown", "Please reduce your request rate."),
                       1000]  # a body that ends after 1,000 bytes
        with open(fetch.fetch_model(spec, self.tmp, client=s3, part_bytes=2 * MIB, concurrency=1), "rb") as f:
            self.assertEqual(f.read(), data)
        self.assertEqual(fetch.last_fetch["retries"], 3)
        self.assertEqual(len(s3.ranges), 4)

    def test_a_part_that_keeps_failing_is_reported_after_every_attempt(self):
        data = os.urandom(MIB)
        spec = spec_of(data)
        s3 = self.s3_with(data, spec)
        s3.failures = [FakeClientError(503, "SlowDown", "Please reduce your request rate.")] * 50
        message = self.expect_error(fetch.TORCH_MODEL_DOWNLOAD_FAILED, spec, s3)
        self.assertEqual(len(s3.ranges), fetch.ATTEMPTS)
        self.assertIn("part 1 of 1 (bytes 0-1048575) failed 5 times", message)
        self.assertIn("503 SlowDown: Please reduce your request rate.", message)
        self.assertIn("s3://deploy-bucket/serverless-torch/models/abc/model.pt", message)

    def test_backoff_doubles_up_to_its_cap(self):
        with mock.patch.object(fetch, "BACKOFF_SECONDS", 0.25), mock.patch.object(fetch, "BACKOFF_CAP_SECONDS", 2.0):
            self.assertEqual([fetch.backoff_seconds(n) for n in range(1, 6)], [0.25, 0.5, 1.0, 2.0, 2.0])

    def test_a_refusal_is_not_retried_and_stops_the_other_parts(self):
        data = os.urandom(32 * MIB)
        spec = spec_of(data)
        s3 = self.s3_with(data, spec)
        s3.failures = [FakeClientError(403, "AccessDenied", "Access Denied")] * 50
        self.expect_error(fetch.TORCH_MODEL_ACCESS_DENIED, spec, s3, part_bytes=MIB, concurrency=2)
        # One per stream, and perhaps one more each that started before the first failure was seen.
        self.assertLessEqual(len(s3.ranges), 4)

    def test_a_part_waiting_to_retry_gives_up_at_once_when_another_part_fails_for_good(self):
        data = os.urandom(2 * MIB)
        spec = spec_of(data)
        s3 = self.s3_with(data, spec)
        # Whichever part asks first is throttled and waits at least 5 s; the other is refused.
        s3.failures = [FakeClientError(503, "SlowDown", "Please reduce your request rate."),
                       FakeClientError(403, "AccessDenied", "Access Denied")]
        started = time.monotonic()
        with mock.patch.object(fetch, "BACKOFF_SECONDS", 10.0), mock.patch.object(fetch, "BACKOFF_CAP_SECONDS", 10.0):
            self.expect_error(fetch.TORCH_MODEL_ACCESS_DENIED, spec, s3, part_bytes=MIB, concurrency=2)
        self.assertLess(time.monotonic() - started, 4.0)
        self.assertEqual(len(s3.ranges), 2)

    def test_a_bug_is_raised_as_it_is_and_cleaned_up(self):
        data = os.urandom(MIB)
        spec = spec_of(data)
        s3 = self.s3_with(data, spec)
        s3.failures = [TypeError("get_object() got an unexpected keyword argument")]
        with self.assertRaises(TypeError):
            fetch.fetch_model(spec, self.tmp, client=s3)
        self.assertEqual(len(s3.ranges), 1)
        self.assertEqual(self.files(), [])


class ErrorMapping(unittest.TestCase):
    spec = {"bucket": "b", "key": "serverless-torch/models/abc/m.pt", "size": 10, "sha256": "a" * 64, "file": "m.pt"}

    def classify(self, error):
        return fetch.classify(error, self.spec, "/tmp")

    def test_each_s3_answer_maps_to_one_code_with_its_fix(self):
        cases = [
            (FakeClientError(404, "NoSuchKey", "The specified key does not exist."), fetch.TORCH_MODEL_OBJECT_MISSING,
             ["s3://b/serverless-torch/models/abc/m.pt does not exist", "NoSuchKey", "deploy the service again"]),
            (FakeClientError(404, "NoSuchBucket", "The specified bucket does not exist"),
             fetch.TORCH_MODEL_OBJECT_MISSING, ["bucket b of the model", "deploy the service again"]),
            (FakeClientError(404, "", ""), fetch.TORCH_MODEL_OBJECT_MISSING, ["does not exist"]),
            (FakeClientError(403, "AccessDenied", "Access Denied"), fetch.TORCH_MODEL_ACCESS_DENIED,
             ["needs s3:GetObject on arn:aws:s3:::b/serverless-torch/models/abc/m.pt", "s3:ListBucket"]),
            (FakeClientError(403, "InvalidAccessKeyId", "not in our records"), fetch.TORCH_MODEL_ACCESS_DENIED,
             ["refused the credentials", "InvalidAccessKeyId"]),
            (NoCredentialsError("Unable to locate credentials"), fetch.TORCH_MODEL_ACCESS_DENIED,
             ["no AWS credentials", "AWS_PROFILE"]),
            (FakeClientError(416, "InvalidRange", "not satisfiable", ActualObjectSize="4"),
             fetch.TORCH_MODEL_HASH_MISMATCH, ["is 4 bytes, the package expects 10 bytes"]),
            (FakeClientError(400, "InvalidArgument", "Invalid Argument"), fetch.TORCH_MODEL_DOWNLOAD_FAILED,
             ["S3 answered 400 InvalidArgument"]),
        ]
        for error, code, phrases in cases:
            failure = self.classify(error)
            self.assertIsInstance(failure, fetch.InitError, error)
            self.assertEqual(failure.code, code, error)
            for phrase in phrases:
                self.assertIn(phrase, str(failure))

    def test_the_permission_names_the_partition_of_the_region(self):
        denied = FakeClientError(403, "AccessDenied", "Access Denied")
        with mock.patch.dict(os.environ, {"AWS_REGION": "cn-north-1"}):
            self.assertIn("arn:aws-cn:s3:::b/", str(self.classify(denied)))
        self.assertIn("arn:aws-us-gov:s3:::b/", str(fetch.classify(denied, dict(self.spec, region="us-gov-west-1"), "/tmp")))

    def test_throttling_server_errors_and_broken_connections_are_worth_another_try(self):
        for error in (FakeClientError(503, "SlowDown", "Please reduce your request rate."),
                      FakeClientError(500, "InternalError", "We encountered an internal error."),
                      FakeClientError(400, "RequestTimeout", "Your socket connection to the server was not read"),
                      FakeClientError(429, "", ""), ConnectionResetError(104, "reset"), TimeoutError("timed out"),
                      ConnectionRefusedError(111, "refused")):
            self.assertIsNone(self.classify(error), error)

    def test_anything_else_is_a_bug_and_raised_as_it_is(self):
        for error in (ValueError("bad"), KeyError("Body")):
            with self.assertRaises(type(error)):
                self.classify(error)


class SpecChecks(unittest.TestCase):
    def test_values_that_would_become_paths_are_refused(self):
        good = {"bucket": "b", "key": "k", "size": 1, "sha256": "a" * 64, "file": "model.pt"}
        fetch.checked_spec(good)
        for field, value in (("sha256", "../" + "a" * 61), ("sha256", "A" * 64), ("file", "../model.pt"),
                             ("file", ".verified"), ("file", ""), ("size", -1), ("size", True), ("size", "1"),
                             ("bucket", ""), ("key", None)):
            with self.assertRaises(fetch.InitError) as caught:
                fetch.checked_spec(dict(good, **{field: value}))
            self.assertEqual(caught.exception.code, fetch.TORCH_BAD_MANIFEST)
            self.assertIn("%s %r" % (field, value), str(caught.exception))


class FakeConfig(object):
    refuses_checksum_options = False

    def __init__(self, **options):
        if self.refuses_checksum_options and "response_checksum_validation" in options:
            raise TypeError("Got unexpected keyword argument 'response_checksum_validation'")
        self.options = options


class Client(unittest.TestCase):
    """How the botocore client is made, with botocore replaced by a recorder."""

    def client_for(self, env, config=FakeConfig):
        made = []
        session = types.SimpleNamespace(create_client=lambda *args, **kwargs: made.append((args, kwargs)))
        botocore = types.ModuleType("botocore")
        modules = {"botocore": botocore,
                   "botocore.session": types.SimpleNamespace(get_session=lambda: session),
                   "botocore.config": types.SimpleNamespace(Config=config)}
        botocore.session, botocore.config = modules["botocore.session"], modules["botocore.config"]
        with mock.patch.dict(sys.modules, modules), mock.patch.dict(os.environ, env, clear=True):
            fetch.s3_client(16, "eu-west-1")
        (args, kwargs), = made
        return args, kwargs

    def test_without_an_endpoint_botocore_finds_s3_itself(self):
        args, kwargs = self.client_for({})
        self.assertEqual(args, ("s3",))
        self.assertEqual((kwargs["endpoint_url"], kwargs["region_name"]), (None, "eu-west-1"))
        options = kwargs["config"].options
        self.assertNotIn("s3", options)
        self.assertEqual(options["max_pool_connections"], 16)
        self.assertEqual(options["retries"], {"max_attempts": 0})
        self.assertEqual(options["response_checksum_validation"], "when_required")

    def test_a_configured_endpoint_is_used_with_path_style_addressing(self):
        both = {"AWS_ENDPOINT_URL_S3": "http://127.0.0.1:9000", "AWS_ENDPOINT_URL": "http://127.0.0.1:9999"}
        for env, expected in ((both, "http://127.0.0.1:9000"), ({"AWS_ENDPOINT_URL": "http://localhost:1"}, "http://localhost:1")):
            _args, kwargs = self.client_for(env)
            self.assertEqual(kwargs["endpoint_url"], expected)
            self.assertEqual(kwargs["config"].options["s3"], {"addressing_style": "path"})
        _args, kwargs = self.client_for(dict(both, AWS_IGNORE_CONFIGURED_ENDPOINT_URLS="true"))
        self.assertIsNone(kwargs["endpoint_url"])

    def test_a_botocore_without_checksum_options_still_gets_a_client(self):
        class OldConfig(FakeConfig):
            refuses_checksum_options = True

        _args, kwargs = self.client_for({}, OldConfig)
        self.assertNotIn("response_checksum_validation", kwargs["config"].options)
        self.assertEqual(kwargs["config"].options["read_timeout"], fetch.READ_TIMEOUT_SECONDS)


class Imports(unittest.TestCase):
    def test_importing_fetch_loads_no_botocore(self):
        code = ("import sys; sys.path.insert(0, %r); import serverless_torch.fetch; "
                "print(sorted(m for m in sys.modules if m.split('.')[0] in ('botocore', 'boto3', 'urllib3')))"
                % os.path.dirname(PACKAGE_DIR))
        out = subprocess.run([sys.executable, "-I", "-c", code],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=60)
        self.assertEqual(out.returncode, 0, out.stderr.decode())
        self.assertEqual(out.stdout.decode().strip(), "[]")


if __name__ == "__main__":
    unittest.main()
