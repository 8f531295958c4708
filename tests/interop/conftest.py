"""Fixtures for interoperability tests: the real `tributary` binary (registry and gateway) on a
real broker, and clients that no one here wrote (confluent-kafka for Python)."""

import json
import os
import secrets
import socket
import subprocess
import tempfile
import time
import urllib.error
import urllib.request

import pytest

BOOTSTRAP = os.environ.get("TRIBUTARY_TEST_BOOTSTRAP", "127.0.0.1:9092")
BIN = os.environ.get(
    "TRIBUTARY_BIN",
    os.path.join(
        os.environ.get("CARGO_TARGET_DIR", os.path.expanduser("~/.cache/tributary/target")),
        "release",
        "tributary",
    ),
)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def http(method, url, body=None, content_type="application/json"):
    """(status, decoded JSON or text) of one HTTP call."""
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(url, data=data, method=method)
    if data is not None:
        req.add_header("content-type", content_type)
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            status, raw = resp.status, resp.read()
    except urllib.error.HTTPError as e:
        status, raw = e.code, e.read()
    try:
        return status, json.loads(raw)
    except ValueError:
        return status, raw.decode(errors="replace")


def wait_http_ok(url, proc, what, timeout=60):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert proc.poll() is None, f"{what} exited with {proc.returncode}"
        try:
            with urllib.request.urlopen(url, timeout=2) as resp:
                if resp.status == 200:
                    return
        except (urllib.error.URLError, ConnectionError, OSError):
            pass
        time.sleep(0.2)
    raise AssertionError(f"{what} not ready after {timeout}s")


class Platform:
    """A registry and a gateway of their own, with topics and a schema topic of their own."""

    def __init__(self, workdir):
        suffix = secrets.token_hex(5)
        self.topic = f"interop-{suffix}.click"
        self.proto_topic = f"interop-{suffix}.pb"
        self.registry_port = free_port()
        self.gateway_port = free_port()
        self.registry = f"http://127.0.0.1:{self.registry_port}"
        self.gateway = f"http://127.0.0.1:{self.gateway_port}"
        self.config = os.path.join(workdir, "tributary.toml")
        with open(self.config, "w") as f:
            f.write(
                f"""
[kafka]
bootstrap_servers = "{BOOTSTRAP}"

[gateway]
listen = "127.0.0.1:{self.gateway_port}"
schema_refresh_secs = 0

[gateway.registry]
url = "{self.registry}"

[registry]
listen = "127.0.0.1:{self.registry_port}"
topic = "_schemas-interop-{suffix}"

[[topics]]
name = "{self.topic}"
partitions = 3
key_field = "user_id"
role = "source"
value_format = "avro"

[[topics]]
name = "{self.proto_topic}"
partitions = 3
key_field = "user_id"
role = "source"
value_format = "protobuf"
"""
            )
        self.procs = []
        subprocess.run([BIN, "--config", self.config, "topics", "apply"], check=True, capture_output=True)
        self.start("registry", f"{self.registry}/subjects")
        self.start("gateway", f"{self.gateway}/api/v1/health")

    def start(self, command, ready_url):
        log = open(os.path.join(os.path.dirname(self.config), f"{command}.log"), "w")
        proc = subprocess.Popen([BIN, "--config", self.config, command], stdout=log, stderr=log)
        self.procs.append(proc)
        wait_http_ok(ready_url, proc, command)

    def stop(self):
        for p in self.procs:
            p.terminate()
        for p in self.procs:
            try:
                p.wait(timeout=20)
            except subprocess.TimeoutExpired:
                p.kill()


@pytest.fixture
def platform():
    with tempfile.TemporaryDirectory() as workdir:
        p = Platform(workdir)
        try:
            yield p
        finally:
            p.stop()
