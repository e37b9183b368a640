"""Fetches a model stored in S3 into /tmp at cold start, checks it and keeps it for the sandbox.

Standard library at import time. botocore (which the Lambda Python runtime provides under
/var/runtime; elsewhere, whatever the caller put on sys.path) is imported only by
fetch_model(), so a function whose model ships in its zip never pays for it.

The file lands at <tmp_dir>/serverless-torch/models/<sha256>/<file>. It is downloaded with
parallel ranged GETs into a temporary file in the same directory, each part written at its
offset, hashed in order while later parts are still arriving, checked against the size and
sha256 the package recorded, renamed into place, and only then marked verified. A file without
the marker is never used: the next init downloads it again. Every failure is one InitError
with a code (see the TORCH_* constants below).
"""

import errno
import hashlib
import json
import os
import random
import re
import secrets
import shutil
import threading
import time
from concurrent.futures import ThreadPoolExecutor, as_completed
from http.client import HTTPException
from typing import Any, Dict, List, Optional, Tuple

from serverless_torch.errors import InitError
from serverless_torch.unpack import pid_alive

MODELS_DIR = os.path.join("serverless-torch", "models")
TEMP_PREFIX = ".download-"
MARKER_SUFFIX = ".verified"

# Ranged GETs of 16 MiB, 16 at a time: on Lambda the network is the limit, and AWS's guidance
# for S3 is 8-16 MB ranges over many connections. On loopback (bench/s3-download.ts, 400 MiB,
# medians of 5, 2 busy cores shared with the server) every cell with 2-16 streams and 8-64 MiB
# parts came out at 0.78-1.20 of one single-stream GET (16 MiB x 16: 1.03), within the noise:
# there the CPU is the limit, so it cannot argue against the guidance. One stream of ranged
# parts was 0.61-0.74 (each GET waits for its first byte): parallel parts hide that wait. Of
# 16 MiB and 8 MiB, 16 MiB pays that wait half as often. Memory stays at 16 x CHUNK_BYTES:
# parts are streamed to the file.
PART_BYTES = 16 << 20
CONCURRENCY = 16
CHUNK_BYTES = 1 << 20

# Each part is tried ATTEMPTS times in all (throttling, 5xx, timeouts, dropped connections),
# waiting BACKOFF_SECONDS * 2**n (capped, with jitter) between tries: 0.25+0.5+1+2 s at
# most, so a part that cannot be had fails within about 4 s plus its timeouts, inside
# Lambda's 10 s init.
ATTEMPTS = 5
BACKOFF_SECONDS = 0.25
BACKOFF_CAP_SECONDS = 2.0
CONNECT_TIMEOUT_SECONDS = 3
READ_TIMEOUT_SECONDS = 10

# Hash each part as soon as every part before it is in the file (True), overlapping hashing
# with the download, rather than reading the file once more at the end (False): measured 1.03
# against 0.95 of a single-stream GET here, and on Lambda, where the download waits for the
# network, hashing afterwards would add size / ~750 MB/s (sha256 on one core here) to the init.
HASH_WHILE_DOWNLOADING = True

TORCH_MODEL_OBJECT_MISSING = "TORCH_MODEL_OBJECT_MISSING"
TORCH_MODEL_ACCESS_DENIED = "TORCH_MODEL_ACCESS_DENIED"
TORCH_MODEL_HASH_MISMATCH = "TORCH_MODEL_HASH_MISMATCH"
TORCH_TMP_TOO_SMALL = "TORCH_TMP_TOO_SMALL"
TORCH_MODEL_DOWNLOAD_FAILED = "TORCH_MODEL_DOWNLOAD_FAILED"
TORCH_BAD_MANIFEST = "TORCH_BAD_MANIFEST"

MAX_EPHEMERAL_STORAGE_MB = 10240

# Filled by fetch_model() so the shim can log how the cold start was spent.
last_fetch: Dict[str, Any] = {
    "seconds": 0.0,
    "client_seconds": 0.0,
    "bytes": 0,
    "parts": 0,
    "part_bytes": 0,
    "concurrency": 0,
    "retries": 0,
    "reused": False,
    "path": None,
}

# One download at a time per process: the stale-temporary sweep treats our own pid as dead
# (a runtime restarted in the same sandbox may get the pid of the one that was killed).
_lock = threading.Lock()

S3_ERRORS_MISSING = ("NoSuchKey", "NoSuchBucket", "NotFound")
S3_ERRORS_DENIED = ("AccessDenied", "AllAccessDisabled", "InvalidAccessKeyId", "SignatureDoesNotMatch",
                    "ExpiredToken", "InvalidToken", "TokenRefreshRequired", "InvalidObjectState")
S3_ERRORS_TRANSIENT = ("SlowDown", "Throttling", "ThrottlingException", "RequestTimeout",
                       "InternalError", "ServiceUnavailable", "RequestLimitExceeded")
CREDENTIAL_ERRORS = ("NoCredentialsError", "PartialCredentialsError", "CredentialRetrievalError")


class _Stop(Exception):
    """Another part failed: this one gives up quietly."""


class _NoSpace(InitError):
    """/tmp filled up during the download; measured again once the temporary file is gone."""


def fetch_model(spec: Dict[str, Any], tmp_dir: str, client: Any = None,
                part_bytes: Optional[int] = None, concurrency: Optional[int] = None,
                hash_while_downloading: Optional[bool] = None) -> str:
    """The path of a verified local copy of the model object that `spec` describes.

    spec: {"bucket", "key", "size", "sha256", "file"} and optionally "region" (the bucket's).
    client: an S3 client to use instead of a new botocore one (tests); part_bytes, concurrency
    and hash_while_downloading override the module's defaults (bench/s3-download.ts).
    """
    started = time.perf_counter()
    spec = checked_spec(spec)
    directory = os.path.join(tmp_dir, MODELS_DIR, spec["sha256"])
    final = os.path.join(directory, spec["file"])
    with _lock:
        if is_verified(directory, spec):
            last_fetch.update(seconds=time.perf_counter() - started, client_seconds=0.0, bytes=0, parts=0,
                              part_bytes=0, concurrency=0, retries=0, reused=True, path=final)
            return final
        os.makedirs(directory, exist_ok=True)
        remove_stale_temporaries(os.path.join(tmp_dir, MODELS_DIR))
        # Never trusted without its marker (a process killed between rename and marker): gone
        # before the space check, so its bytes count as free.
        _remove(os.path.join(directory, spec["file"] + MARKER_SUFFIX))
        _remove(final)
        check_space(directory, spec, tmp_dir)
        plan = _Plan(spec, part_bytes or PART_BYTES, concurrency or CONCURRENCY,
                     HASH_WHILE_DOWNLOADING if hash_while_downloading is None else hash_while_downloading, tmp_dir)
        made_client = client is None
        if made_client:
            client = s3_client(plan.concurrency, spec.get("region"))
        client_seconds = time.perf_counter() - started
        temp = os.path.join(directory, "%s%d-%s" % (TEMP_PREFIX, os.getpid(), secrets.token_hex(6)))
        try:
            download(client, plan, temp)
            os.rename(temp, final)
            _write_marker(directory, spec)
        except _NoSpace as error:
            _remove(temp)
            usage = shutil.disk_usage(directory)
            raise _too_small(spec, tmp_dir, usage.total, usage.free,
                             "other files took the space while it downloaded") from error
        except BaseException:
            _remove(temp)
            raise
        finally:
            if made_client:
                _close(client)
        last_fetch.update(seconds=time.perf_counter() - started, client_seconds=client_seconds,
                          bytes=spec["size"], parts=len(plan.parts), part_bytes=plan.part_bytes,
                          concurrency=plan.concurrency, retries=plan.retries, reused=False, path=final)
    return final


def describe(stats: Dict[str, Any]) -> str:
    """last_fetch as one phrase for the init log line."""
    if stats.get("reused"):
        return "reused %s" % stats["path"]
    seconds = stats["seconds"]
    # The rate is the download's own: creating the client is given apart.
    rate = stats["bytes"] / 2.0 ** 20 / max(seconds - stats["client_seconds"], 1e-9)
    return "%.2f s (%.1f MiB at %.0f MiB/s, %d parts of %d MiB, %d streams, %d retries, client %.2f s)" % (
        seconds, stats["bytes"] / 2.0 ** 20, rate, stats["parts"], stats["part_bytes"] >> 20, stats["concurrency"],
        stats["retries"], stats["client_seconds"])


_SHA256 = re.compile(r"^[0-9a-f]{64}$")


def checked_spec(spec: Any) -> Dict[str, Any]:
    """`spec` with its types checked: the sha256 and the file name become path components."""
    problems = []
    if not isinstance(spec, dict):
        raise InitError(TORCH_BAD_MANIFEST, "the S3 model entry in manifest.json is %r, not an object; "
                        "package the function again" % (spec,))
    for name in ("bucket", "key"):
        if not isinstance(spec.get(name), str) or not spec[name]:
            problems.append("%s %r is not a non-empty string" % (name, spec.get(name)))
    size = spec.get("size")
    if not isinstance(size, int) or isinstance(size, bool) or size < 0:
        problems.append("size %r is not a byte count" % (size,))
    if not isinstance(spec.get("sha256"), str) or not _SHA256.match(spec["sha256"]):
        problems.append("sha256 %r is not 64 lowercase hex digits" % (spec.get("sha256"),))
    name = spec.get("file")
    if not isinstance(name, str) or not name or "/" in name or "\x00" in name or name.startswith("."):
        problems.append("file %r is not a plain file name" % (name,))
    if problems:
        raise InitError(TORCH_BAD_MANIFEST, "the S3 model entry in manifest.json is invalid: %s; package "
                        "the function again with the same serverless-torch version as the shim"
                        % "; ".join(problems))
    return spec


def is_verified(directory: str, spec: Dict[str, Any]) -> bool:
    """True when the file is in place with a marker that says it was checked against `spec`."""
    try:
        with open(os.path.join(directory, spec["file"] + MARKER_SUFFIX), "rb") as f:
            marker = json.loads(f.read().decode("utf-8"))
        size = os.stat(os.path.join(directory, spec["file"])).st_size
    except (OSError, ValueError):
        return False
    return (isinstance(marker, dict) and marker.get("sha256") == spec["sha256"]
            and marker.get("size") == spec["size"] == size)


def _write_marker(directory: str, spec: Dict[str, Any]) -> None:
    # Written beside and renamed, so a marker is either absent or whole.
    marker = os.path.join(directory, spec["file"] + MARKER_SUFFIX)
    temp = os.path.join(directory, "%s%d-%s" % (TEMP_PREFIX, os.getpid(), secrets.token_hex(6)))
    try:
        with open(temp, "w") as f:
            f.write(json.dumps({"sha256": spec["sha256"], "size": spec["size"], "bucket": spec["bucket"],
                                "key": spec["key"]}))
        os.rename(temp, marker)
    except BaseException:
        _remove(temp)
        raise


def remove_stale_temporaries(models_dir: str) -> None:
    """Best effort: a download killed mid-way leaves a temporary file that would fill /tmp."""
    try:
        directories = os.listdir(models_dir)
    except OSError:
        return
    for sha in directories:
        try:
            names = os.listdir(os.path.join(models_dir, sha))
        except OSError:
            continue
        for name in names:
            if not name.startswith(TEMP_PREFIX):
                continue
            try:
                pid = int(name[len(TEMP_PREFIX):].split("-")[0])
            except ValueError:
                continue
            if not pid_alive(pid):
                _remove(os.path.join(models_dir, sha, name))


def _remove(path: str) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass


def check_space(directory: str, spec: Dict[str, Any], tmp_dir: str) -> None:
    """Refuses before the first request when the model cannot fit in /tmp."""
    usage = shutil.disk_usage(directory)
    if usage.free >= spec["size"]:
        return
    raise _too_small(spec, tmp_dir, usage.total, usage.free)


def _too_small(spec: Dict[str, Any], tmp_dir: str, total: int, free: int, why: str = "") -> InitError:
    # What is used already stays used (unpacked dependencies live in /tmp too), so the size to
    # set is that plus the model, with a little room.
    needed_mb = (total - free + spec["size"]) // 2 ** 20 + 64
    if needed_mb <= MAX_EPHEMERAL_STORAGE_MB:
        fix = "set the function's ephemeralStorageSize to at least %d (MB)" % needed_mb
    else:
        fix = ("that is more than Lambda's largest ephemeralStorageSize (%d MB): the model has to be "
               "smaller, or the function a container image" % MAX_EPHEMERAL_STORAGE_MB)
    return InitError(
        TORCH_TMP_TOO_SMALL,
        "the model s3://%s/%s needs %d bytes (%.1f MiB) in %s but only %d bytes (%.1f MiB) of %.1f MiB are "
        "free%s: %s" % (spec["bucket"], spec["key"], spec["size"], spec["size"] / 2.0 ** 20, tmp_dir, free,
                        free / 2.0 ** 20, total / 2.0 ** 20, " (%s)" % why if why else "", fix),
    )


def s3_client(concurrency: int, region: Optional[str] = None) -> Any:
    """A botocore S3 client for `concurrency` threads, without botocore's own retries (ours count
    and back off per part), reaching AWS_ENDPOINT_URL_S3 / AWS_ENDPOINT_URL when one is set."""
    import botocore.session
    from botocore.config import Config

    endpoint = None
    if os.environ.get("AWS_IGNORE_CONFIGURED_ENDPOINT_URLS", "").lower() != "true":
        # botocore >= 1.31 reads these itself; passing them on serves older ones alike.
        endpoint = os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL") or None
    options: Dict[str, Any] = {
        "max_pool_connections": concurrency,
        "connect_timeout": CONNECT_TIMEOUT_SECONDS,
        "read_timeout": READ_TIMEOUT_SECONDS,
        "retries": {"max_attempts": 0},
    }
    if endpoint:
        # A local S3 (127.0.0.1, localhost) has no per-bucket host names.
        options["s3"] = {"addressing_style": "path"}
    try:
        # Our sha256 checks every byte; botocore >= 1.36 would otherwise also ask for checksums.
        config = Config(response_checksum_validation="when_required",
                        request_checksum_calculation="when_required", **options)
    except TypeError:
        config = Config(**options)
    return botocore.session.get_session().create_client("s3", region_name=region, endpoint_url=endpoint,
                                                          config=config)


def _close(client: Any) -> None:
    # Sockets opened before a SnapStart snapshot are dead after the restore: let them go now.
    close = getattr(client, "close", None)
    if callable(close):
        close()


class _Plan(object):
    """One download: its parts, how many at a time, and what happened."""

    def __init__(self, spec: Dict[str, Any], part_bytes: int, concurrency: int, hash_while_downloading: bool,
                 tmp_dir: str = "/tmp"):
        self.spec = spec
        self.tmp_dir = tmp_dir
        self.part_bytes = max(1, int(part_bytes))
        size = spec["size"]
        # (start, length); an empty object is one unranged GET.
        self.parts: List[Tuple[int, int]] = [(start, min(self.part_bytes, size - start))
                                             for start in range(0, size, self.part_bytes)] or [(0, 0)]
        self.concurrency = max(1, min(int(concurrency), len(self.parts)))
        self.hash_while_downloading = hash_while_downloading
        self.retries = 0
        self.stop = threading.Event()
        self.counter_lock = threading.Lock()


def download(client: Any, plan: _Plan, temp: str) -> None:
    """Writes the object into `temp` and checks its size and sha256, or raises InitError."""
    fd = os.open(temp, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
    try:
        digest = hashlib.sha256()
        hashed = 0
        done = [False] * len(plan.parts)
        pool = ThreadPoolExecutor(max_workers=plan.concurrency, thread_name_prefix="serverless-torch-fetch")
        try:
            futures = {pool.submit(fetch_part, client, plan, fd, i): i for i in range(len(plan.parts))}
            for future in as_completed(futures):
                future.result()
                done[futures[future]] = True
                while plan.hash_while_downloading and hashed < len(plan.parts) and done[hashed]:
                    _hash_range(fd, digest, *plan.parts[hashed])
                    hashed += 1
        except BaseException:
            plan.stop.set()
            raise
        finally:
            # Waits for the workers: none may write into the file once it is closed and removed.
            pool.shutdown(wait=True, cancel_futures=True)
        if not plan.hash_while_downloading:
            _hash_range(fd, digest, 0, plan.spec["size"])
        got = digest.hexdigest()
    finally:
        os.close(fd)
    spec = plan.spec
    if got != spec["sha256"]:
        raise InitError(
            TORCH_MODEL_HASH_MISMATCH,
            "the model downloaded from s3://%s/%s has sha256 %s, the package expects %s: the object was "
            "replaced after the function was packaged; deploy the service again"
            % (spec["bucket"], spec["key"], got, spec["sha256"]),
        )


def _hash_range(fd: int, digest: Any, start: int, length: int) -> None:
    # From the page cache; hashlib releases the GIL, so downloads go on meanwhile.
    end = start + length
    while start < end:
        block = os.pread(fd, min(CHUNK_BYTES, end - start), start)
        if not block:
            raise InitError(TORCH_MODEL_DOWNLOAD_FAILED, "the downloaded model file ends at %d bytes, before %d"
                            % (start, end))
        digest.update(block)
        start += len(block)


def fetch_part(client: Any, plan: _Plan, fd: int, index: int) -> None:
    """One part into the file at its offset, tried ATTEMPTS times when the failure is transient."""
    for attempt in range(1, ATTEMPTS + 1):
        if plan.stop.is_set():
            raise _Stop()
        try:
            _get_part(client, plan, fd, index)
            return
        except (_Stop, InitError):
            raise
        except Exception as error:  # classified below: what is not transient is raised as it is
            failure = classify(error, plan.spec, plan.tmp_dir)
            if failure is not None:
                raise failure from error
            if attempt == ATTEMPTS:
                raise _download_failed(plan, index, error) from error
            with plan.counter_lock:
                plan.retries += 1
        # Jitter keeps the parts that failed together from retrying together; wait() ends
        # early when another part has already failed for good.
        if plan.stop.wait(backoff_seconds(attempt) * random.uniform(0.5, 1.0)):
            raise _Stop()


def backoff_seconds(attempt: int) -> float:
    """The longest wait after failed attempt number `attempt` (1-based)."""
    return min(BACKOFF_CAP_SECONDS, BACKOFF_SECONDS * 2 ** (attempt - 1))


def _get_part(client: Any, plan: _Plan, fd: int, index: int) -> None:
    spec = plan.spec
    start, length = plan.parts[index]
    request = {"Bucket": spec["bucket"], "Key": spec["key"]}
    if length:
        request["Range"] = "bytes=%d-%d" % (start, start + length - 1)
    response = client.get_object(**request)
    body = response["Body"]
    try:
        total = _object_size(response)
        if total != spec["size"]:
            raise _size_mismatch(spec, total)
        offset, end = start, start + length
        while offset < end:
            if plan.stop.is_set():
                raise _Stop()
            block = body.read(min(CHUNK_BYTES, end - offset))
            if not block:
                raise ConnectionError("the response for bytes %d-%d ended at byte %d" % (start, end - 1, offset))
            _write_at(fd, block, offset)
            offset += len(block)
    finally:
        body.close()


def _object_size(response: Dict[str, Any]) -> Optional[int]:
    """The whole object's size, from Content-Range ("bytes 0-99/1234") or, unranged, the length."""
    content_range = response.get("ContentRange")
    if content_range:
        total = content_range.rpartition("/")[2]
        return int(total) if total.isdigit() else None
    return response.get("ContentLength")


def _write_at(fd: int, data: bytes, offset: int) -> None:
    view = memoryview(data)
    while view:
        written = os.pwrite(fd, view, offset)
        offset += written
        view = view[written:]


def _size_mismatch(spec: Dict[str, Any], total: Any) -> InitError:
    return InitError(
        TORCH_MODEL_HASH_MISMATCH,
        "the model object s3://%s/%s is %s bytes, the package expects %d bytes (sha256 %s): the object was "
        "replaced after the function was packaged; deploy the service again"
        % (spec["bucket"], spec["key"], total if total is not None else "an unknown number of", spec["size"],
           spec["sha256"]),
    )


def classify(error: BaseException, spec: Dict[str, Any], tmp_dir: str) -> Optional[InitError]:
    """The InitError a failure means, or None when it is transient and worth another try.

    Raises `error` itself when it is neither (a bug is not retried, nor dressed up)."""
    response = getattr(error, "response", None)
    if isinstance(response, dict) and isinstance(response.get("Error"), dict):
        return _classify_s3_error(response, spec)
    names = {cls.__name__ for cls in type(error).__mro__}
    if names & set(CREDENTIAL_ERRORS):
        return InitError(
            TORCH_MODEL_ACCESS_DENIED,
            "no AWS credentials to read the model s3://%s/%s (%s): on Lambda the function's role provides "
            "them; elsewhere set AWS_PROFILE or AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY"
            % (spec["bucket"], spec["key"], error),
        )
    if isinstance(error, OSError) and error.errno in (errno.ENOSPC, errno.EDQUOT):
        # Something else filled /tmp after the space check.
        return _NoSpace(TORCH_TMP_TOO_SMALL, "no space left in %s for the model s3://%s/%s"
                        % (tmp_dir, spec["bucket"], spec["key"]))
    if isinstance(error, _transient_types()) and "ParamValidationError" not in names:
        return None
    raise error


def _s3_said(response: Dict[str, Any]) -> str:
    """An S3 error response as "503 SlowDown: Please reduce your request rate."."""
    details = response["Error"]
    status = (response.get("ResponseMetadata") or {}).get("HTTPStatusCode")
    return "%s %s: %s" % (status, details.get("Code") or "", details.get("Message") or "")


def _classify_s3_error(response: Dict[str, Any], spec: Dict[str, Any]) -> Optional[InitError]:
    details = response["Error"]
    code = str(details.get("Code") or "")
    status = (response.get("ResponseMetadata") or {}).get("HTTPStatusCode")
    said = _s3_said(response)
    where = "s3://%s/%s" % (spec["bucket"], spec["key"])
    if code == "NoSuchBucket":
        return InitError(TORCH_MODEL_OBJECT_MISSING, "the bucket %s of the model %s does not exist (%s): deploy the "
                         "service again to upload the model" % (spec["bucket"], where, said))
    if code in S3_ERRORS_MISSING or status == 404:
        return InitError(TORCH_MODEL_OBJECT_MISSING, "the model object %s does not exist (%s): it was deleted "
                         "or never uploaded; deploy the service again to upload it" % (where, said))
    if code in ("InvalidAccessKeyId", "SignatureDoesNotMatch", "ExpiredToken", "InvalidToken"):
        return InitError(TORCH_MODEL_ACCESS_DENIED, "S3 refused the credentials used to read the model %s (%s): on "
                         "Lambda the function's role provides them; elsewhere check AWS_PROFILE or "
                         "AWS_ACCESS_KEY_ID for this endpoint" % (where, said))
    if code in S3_ERRORS_DENIED or status == 403:
        return InitError(TORCH_MODEL_ACCESS_DENIED, "S3 refused to read the model %s (%s): the function's role "
                         "needs s3:GetObject on arn:%s:s3:::%s/%s (with a KMS-encrypted bucket, kms:Decrypt "
                         "on its key too). Without s3:ListBucket S3 also answers 403 for an object that does "
                         "not exist: if the role has the permission, deploy again"
                         % (where, said, partition(spec.get("region") or os.environ.get("AWS_REGION")),
                            spec["bucket"], spec["key"]))
    if code == "InvalidRange" or status == 416:
        actual = details.get("ActualObjectSize")
        return _size_mismatch(spec, int(actual) if str(actual).isdigit() else None)
    if code in S3_ERRORS_TRANSIENT or status in (429,) or (isinstance(status, int) and status >= 500):
        return None
    return InitError(TORCH_MODEL_DOWNLOAD_FAILED, "S3 answered %s for the model %s; nothing was kept in /tmp"
                     % (said, where))


def partition(region: Optional[str]) -> str:
    """The ARN partition of a region: aws, aws-cn or aws-us-gov."""
    if (region or "").startswith("cn-"):
        return "aws-cn"
    if (region or "").startswith("us-gov-"):
        return "aws-us-gov"
    return "aws"


def _transient_types() -> Tuple[type, ...]:
    """Connection, timeout and truncated-response failures of every layer botocore uses."""
    types: List[type] = [OSError, HTTPException]
    try:
        from botocore.exceptions import BotoCoreError

        types.append(BotoCoreError)
    except ImportError:
        pass
    try:
        from urllib3.exceptions import HTTPError

        types.append(HTTPError)
    except ImportError:
        pass
    return tuple(types)


def _download_failed(plan: _Plan, index: int, error: BaseException) -> InitError:
    spec = plan.spec
    start, length = plan.parts[index]
    response = getattr(error, "response", None)
    cause = _s3_said(response) if isinstance(response, dict) and isinstance(response.get("Error"), dict) else error
    return InitError(
        TORCH_MODEL_DOWNLOAD_FAILED,
        "downloading the model s3://%s/%s failed: part %d of %d (bytes %d-%d) failed %d times with backoff "
        "(throttling, a timeout or a dropped connection), the last time with %s: %s. Nothing was kept in "
        "/tmp; the next init tries again. If it persists, check that the function reaches S3 (a function in "
        "a VPC needs an S3 gateway endpoint or a NAT)"
        % (spec["bucket"], spec["key"], index + 1, len(plan.parts), start, start + max(length, 1) - 1, ATTEMPTS,
           type(error).__name__, cause),
    )

