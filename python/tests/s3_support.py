"""A real S3 server for the tests of fetch.py, and a proxy in front of it that misbehaves on request.

The server is s3rver, started through test/support/s3-server.ts; the test harness
(test/integration/runtime/fetch.test.ts) says how, and where botocore is, in the environment:

  SERVERLESS_TORCH_TEST_S3_SERVER  JSON list: the command that starts one server
  SERVERLESS_TORCH_TEST_BOTO3      directory holding boto3, botocore and their dependencies
"""

import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
from http.client import HTTPConnection
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

SERVER_VARIABLE = "SERVERLESS_TORCH_TEST_S3_SERVER"
BOTO3_VARIABLE = "SERVERLESS_TORCH_TEST_BOTO3"
ACCESS_KEY = "S3RVER"  # the one account s3rver knows
BUCKET = "models"


def require_harness():
    """botocore on sys.path; raises (never skips) when the suite is run without its harness."""
    missing = [name for name in (SERVER_VARIABLE, BOTO3_VARIABLE) if not os.environ.get(name)]
    if missing:
        raise RuntimeError(
            "%s not set: these tests need a real S3 server and botocore; run them with "
            "`npx mocha dist/test/integration/runtime/fetch.test.js`" % ", ".join(missing))
    if os.environ[BOTO3_VARIABLE] not in sys.path:
        sys.path.insert(0, os.environ[BOTO3_VARIABLE])


class S3Server(object):
    """One s3rver process on 127.0.0.1 with a bucket; its data directory survives kill()."""

    def __init__(self, data_dir=None, port=0):
        self.own_dir = data_dir is None
        self.data_dir = data_dir or tempfile.mkdtemp(prefix="serverless-torch-s3rver-")
        command = json.loads(os.environ[SERVER_VARIABLE])
        # stdin is a pipe the server watches: if this process dies, the server goes too.
        self.process = subprocess.Popen(
            command + ["--data", self.data_dir, "--bucket", BUCKET, "--port", str(port)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        line = self.process.stdout.readline()
        if not line:
            self.process.wait()
            raise RuntimeError("s3rver did not start: %s" % self.process.stderr.read().decode())
        self.port = json.loads(line)["port"]
        self.endpoint = "http://127.0.0.1:%d" % self.port

    def kill(self):
        """SIGKILL: the server dies mid-response, as a crashed or unreachable S3 would."""
        self.process.kill()
        self.process.wait()

    def close(self):
        if self.process.poll() is None:
            self.process.stdin.close()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.kill()
        for stream in (self.process.stdin, self.process.stdout, self.process.stderr):
            stream.close()
        if self.own_dir:
            shutil.rmtree(self.data_dir, ignore_errors=True)


def client(endpoint, access_key=ACCESS_KEY):
    """A botocore client for arranging objects, independent of the code under test."""
    import botocore.session
    from botocore.config import Config

    return botocore.session.get_session().create_client(
        "s3", endpoint_url=endpoint, region_name="us-east-1", aws_access_key_id=access_key,
        aws_secret_access_key=access_key, config=Config(s3={"addressing_style": "path"}))


def s3_error_xml(code, message, resource):
    """An error body as S3 writes it."""
    return ('<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>%s</Code><Message>%s</Message>'
            "<Resource>%s</Resource><RequestId>4442587FB7D0A2F9</RequestId><HostId>proxy</HostId></Error>"
            % (code, message, resource)).encode("utf-8")


class FaultProxy(object):
    """An HTTP proxy on 127.0.0.1 in front of an S3 server, failing the GETs it is told to.

    Faults are used up in order, one per GET: ("error", status, code, message) answers with an
    S3 error document; ("drop", n) forwards the status, headers and n bytes of the body, then
    closes the connection. A fault added with times=None is never used up.
    """

    def __init__(self, upstream_port):
        self.upstream_port = upstream_port
        self.requests = []
        self._faults = []
        self._lock = threading.Lock()
        proxy = self

        class Handler(_ProxyHandler):
            owner = proxy

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.endpoint = "http://127.0.0.1:%d" % self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def fail(self, fault, times=1):
        with self._lock:
            self._faults.extend([(fault, True)] * times if times is not None else [(fault, False)])

    def clear(self):
        with self._lock:
            self._faults = []

    def take_fault(self, method):
        with self._lock:
            self.requests.append(method)
            if method != "GET" or not self._faults:
                return None
            fault, used_up = self._faults[0]
            if used_up:
                self._faults.pop(0)
            return fault

    def gets(self):
        with self._lock:
            return [r for r in self.requests if r == "GET"]

    def close(self):
        self.server.shutdown()
        self.server.server_close()


class _ProxyHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    owner = None  # type: FaultProxy

    def log_message(self, *args):
        pass

    def do_GET(self):
        self._forward()

    def do_HEAD(self):
        self._forward()

    def do_PUT(self):
        self._forward()

    def do_DELETE(self):
        self._forward()

    def _forward(self):
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        fault = self.owner.take_fault(self.command)
        if fault and fault[0] == "error":
            _kind, status, code, message = fault
            document = s3_error_xml(code, message, self.path)
            self.send_response(status)
            self.send_header("Content-Type", "application/xml")
            self.send_header("Content-Length", str(len(document)))
            self.end_headers()
            self.wfile.write(document)
            return
        upstream = HTTPConnection("127.0.0.1", self.owner.upstream_port, timeout=30)
        try:
            headers = {k: v for k, v in self.headers.items() if k.lower() not in ("connection", "keep-alive")}
            upstream.request(self.command, self.path, body=body or None, headers=headers)
            response = upstream.getresponse()
            self.send_response(response.status)
            for name, value in response.getheaders():
                if name.lower() not in ("connection", "keep-alive", "transfer-encoding"):
                    self.send_header(name, value)
            self.end_headers()
            limit = fault[1] if fault and fault[0] == "drop" else None
            self._copy(response, limit)
        finally:
            upstream.close()

    def _copy(self, response, limit):
        sent = 0
        while True:
            block = response.read(1 << 16)
            if not block:
                return
            if limit is not None and sent + len(block) >= limit:
                self.wfile.write(block[:limit - sent])
                self.wfile.flush()
                # Mid-body, as a connection reset by the network leaves it.
                self.connection.shutdown(socket.SHUT_RDWR)
                self.close_connection = True
                return
            self.wfile.write(block)
            sent += len(block)
