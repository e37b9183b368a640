"""Runs the packaged function on this machine the way Lambda would, for `sls invoke local`.

Usage: pythonX.Y -S -s invoke_local.py, with LAMBDA_TASK_ROOT, SERVERLESS_TORCH_OPT_DIR,
SERVERLESS_TORCH_TMP_DIR, SERVERLESS_TORCH_HANDLER and the AWS_LAMBDA_FUNCTION_* variables
set. Reads one JSON event per line on stdin and writes one JSON line per event to the file
descriptor SERVERLESS_TORCH_RESULT_FD (default 3): {"result": ...} or {"error": {...}}.
A failed init writes {"initError": {...}} and exits 1. stdout and stderr stay the user's.
With SERVERLESS_TORCH_REPORT_RSS=1 every line also carries "rss": the process's resident
set size in bytes after that invocation, so a long run shows whether memory stays flat.
"""

import json
import os
import sys
import time
import traceback
import uuid
from typing import Any, Dict, List, Optional


def lambda_sys_path(task_root: str, opt_dir: str, interpreter_path: List[str]) -> List[str]:
    """Lambda's order: task root, the layers' two Python directories, then the runtime.
    Host site-packages never appear: only what was packaged is importable."""
    prefixes = tuple(os.path.abspath(p) + os.sep for p in {sys.base_prefix, sys.base_exec_prefix})
    stdlib = [
        p for p in interpreter_path
        if p
        and (os.path.abspath(p) + os.sep).startswith(prefixes)
        and os.path.basename(p.rstrip(os.sep)) not in ("site-packages", "dist-packages")
    ]
    version = "python%d.%d" % sys.version_info[:2]
    # The function's own PYTHONPATH (which -I keeps Python from reading) takes the place of the
    # runtime's directory, after the task root and the layers, as on Lambda.
    user = [os.path.join(task_root, entry) for entry in os.environ.get("PYTHONPATH", "").split(os.pathsep) if entry]
    # What the Lambda runtime's own directory (/var/runtime) gives a function: boto3.
    runtime = [os.environ["SERVERLESS_TORCH_RUNTIME_DIR"]] if os.environ.get("SERVERLESS_TORCH_RUNTIME_DIR") else []
    return [
        task_root,
        os.path.join(opt_dir, "python", "lib", version, "site-packages"),
        os.path.join(opt_dir, "python"),
    ] + user + runtime + stdlib


class LambdaContext(object):
    """The attributes of the Python runtime's context object that handlers use, plus whatever
    --context gave (set as attributes, as the framework's own invoke local does)."""

    def __init__(self, timeout_seconds: float, fields: Optional[Dict[str, Any]] = None) -> None:
        name = os.environ.get("AWS_LAMBDA_FUNCTION_NAME", "function")
        region = os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION") or "us-east-1"
        self.function_name = name
        self.function_version = "$LATEST"
        # A string, as in the real runtime, which copies it from the environment.
        self.memory_limit_in_mb = os.environ.get("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", "1024")
        self.invoked_function_arn = "arn:aws:lambda:%s:000000000000:function:%s" % (region, name)
        self.aws_request_id = str(uuid.uuid4())
        self.log_group_name = "/aws/lambda/" + name
        self.log_stream_name = time.strftime("%Y/%m/%d/[$LATEST]") + uuid.uuid4().hex
        self.identity = None
        self.client_context = None
        self._deadline = time.time() + timeout_seconds
        for key, value in (fields or {}).items():
            setattr(self, key, value)

    def get_remaining_time_in_millis(self) -> int:
        return max(0, int((self._deadline - time.time()) * 1000))


def resident_bytes() -> Optional[int]:
    """Resident set size from /proc (Linux only; None elsewhere): the figure a memory limit counts."""
    try:
        with open("/proc/self/statm", "rb") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return None


def error_record(exc: BaseException, skip_frames: int = 0) -> Dict[str, Any]:
    tb = exc.__traceback__
    for _ in range(skip_frames):
        if tb is not None:
            tb = tb.tb_next
    return {
        "errorType": type(exc).__name__,
        "errorMessage": str(exc),
        "stackTrace": traceback.format_list(traceback.extract_tb(tb)),
    }


def main() -> int:
    task_root = os.path.abspath(os.environ["LAMBDA_TASK_ROOT"])
    opt_dir = os.path.abspath(os.environ.get("SERVERLESS_TORCH_OPT_DIR") or "/opt")
    out = os.fdopen(int(os.environ.get("SERVERLESS_TORCH_RESULT_FD") or "3"), "w", encoding="utf-8")

    report_rss = os.environ.get("SERVERLESS_TORCH_REPORT_RSS") == "1"

    def emit(record: Dict[str, Any]) -> None:
        if report_rss:
            record["rss"] = resident_bytes()
        # NaN and Infinity are not JSON: the caller parses each line strictly.
        out.write(json.dumps(record, allow_nan=False) + "\n")
        out.flush()

    # This script is not in the function zip (it never runs on Lambda): it lives beside the
    # plugin's copy of the runtime package, which is a fallback for a task root that lacks one.
    runtime = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "runtime")
    sys.path[:] = lambda_sys_path(task_root, opt_dir, sys.path[1:]) + [runtime]
    os.environ["LAMBDA_TASK_ROOT"] = task_root
    os.environ.setdefault("AWS_LAMBDA_FUNCTION_VERSION", "$LATEST")
    os.chdir(task_root)
    timeout = float(os.environ.get("AWS_LAMBDA_FUNCTION_TIMEOUT") or "6")
    context_fields = json.loads(os.environ.get("SERVERLESS_TORCH_CONTEXT") or "{}")

    try:
        from serverless_torch import shim
    except (Exception, SystemExit) as e:
        traceback.print_exc()
        emit({"initError": error_record(e, skip_frames=1)})
        return 1

    while True:
        line = sys.stdin.buffer.readline()
        if not line:
            return 0
        if not line.strip():
            continue
        try:
            event = json.loads(line.decode("utf-8"))
        except ValueError as e:
            emit({"error": {"errorType": "Runtime.UnmarshalError", "errorMessage": str(e), "stackTrace": []}})
            continue
        try:
            result = shim.handler(event, LambdaContext(timeout, context_fields))
        except Exception as e:
            traceback.print_exc()
            emit({"error": error_record(e, skip_frames=1)})
            continue
        except SystemExit as e:
            emit({"error": {
                "errorType": "Runtime.ExitError",
                "errorMessage": "Runtime exited with error: exit status %s" % (e.code,),
                "stackTrace": [],
            }})
            return 1
        try:
            emit({"result": result})
        except (TypeError, ValueError) as e:
            emit({"error": {
                "errorType": "Runtime.MarshalError",
                "errorMessage": "Unable to marshal response: %s" % e,
                "stackTrace": [],
            }})


if __name__ == "__main__":
    sys.exit(main())
