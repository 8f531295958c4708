"""Fixtures for interoperability tests: the real `tributary` binary (registry and gateway) on a
real broker, and clients that no one here wrote (confluent-kafka for Python).

Every test runs twice (the `platform` fixture is parametrized): on the plaintext broker of
TRIBUTARY_TEST_BOOTSTRAP, and on the three-node SASL_SSL cluster that `make test` shares
(deploy/kafka/cluster.sh: SCRAM-SHA-512, TLS from its own CA, replication factor 3,
min.insync.replicas=2, ACLs; named by TRIBUTARY_TEST_CLUSTER_PORT and
TRIBUTARY_TEST_CLUSTER_STATE), where each service runs as its own SCRAM user and confluent-kafka
reads as user `sink` and writes as user `gateway` (the only service user that may write
`events.*`), each with exactly the settings docs/deployment.md gives for MSK. Without those two
variables the cluster runs are skipped, saying why."""

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
ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..")
CLUSTER_PORT = os.environ.get("TRIBUTARY_TEST_CLUSTER_PORT")
CLUSTER_STATE = os.environ.get("TRIBUTARY_TEST_CLUSTER_STATE")


def cluster_env(user):
    """The TRIBUTARY_KAFKA__* settings of SCRAM user `user` on the shared cluster."""
    out = subprocess.run(
        [os.path.join(ROOT, "deploy", "kafka", "cluster.sh"), "client-env", user],
        env={**os.environ, "KAFKA_CLUSTER_PORT": CLUSTER_PORT, "KAFKA_CLUSTER_STATE_DIR": CLUSTER_STATE},
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    return dict(line.split("=", 1) for line in out.splitlines() if "=" in line)


def cluster_client(user):
    """confluent-kafka settings for SCRAM user `user`: the same five values as the services'."""
    env = cluster_env(user)
    return {
        "bootstrap.servers": env["TRIBUTARY_KAFKA__BOOTSTRAP_SERVERS"],
        "security.protocol": "SASL_SSL",
        "sasl.mechanism": env["TRIBUTARY_KAFKA__SASL_MECHANISM"],
        "sasl.username": env["TRIBUTARY_KAFKA__SASL_USERNAME"],
        "sasl.password": env["TRIBUTARY_KAFKA__SASL_PASSWORD"],
        "ssl.ca.location": env["TRIBUTARY_KAFKA__SSL_CA_LOCATION"],
    }


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
    """A registry and a gateway of their own, with topics and a schema topic of their own; on the
    cluster, topics under `events.` (the gateway user's ACLs), the registry's `_schemas` (the
    registry user's), applied as admin, each service as its own user."""

    def __init__(self, workdir, cluster=False):
        suffix = secrets.token_hex(5)
        prefix = "events.interop" if cluster else "interop"
        self.topic = f"{prefix}-{suffix}.click"
        self.proto_topic = f"{prefix}-{suffix}.pb"
        schemas = "_schemas" if cluster else f"_schemas-interop-{suffix}"
        self.env = {u: cluster_env(u) for u in ("admin", "registry", "gateway")} if cluster else {}
        kafka = "" if cluster else f'[kafka]\nbootstrap_servers = "{BOOTSTRAP}"\n'
        self.registry_port = free_port()
        self.gateway_port = free_port()
        self.registry = f"http://127.0.0.1:{self.registry_port}"
        self.gateway = f"http://127.0.0.1:{self.gateway_port}"
        self.config = os.path.join(workdir, "tributary.toml")
        with open(self.config, "w") as f:
            f.write(
                kafka
                + f"""
[gateway]
listen = "127.0.0.1:{self.gateway_port}"
schema_refresh_secs = 0

[gateway.registry]
url = "{self.registry}"

[registry]
listen = "127.0.0.1:{self.registry_port}"
topic = "{schemas}"

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
        self.cluster = cluster
        self.procs = []
        subprocess.run(
            [BIN, "--config", self.config, "topics", "apply"],
            check=True,
            capture_output=True,
            env={**os.environ, **self.env.get("admin", {})},
        )
        self.start("registry", f"{self.registry}/subjects")
        self.start("gateway", f"{self.gateway}/api/v1/health")

    def reader(self):
        """(confluent-kafka settings, consumer group prefix) of a reader: on the cluster the sink
        user, whose ACLs allow reading events.* in groups tributary-sink*."""
        if self.cluster:
            return cluster_client("sink"), "tributary-sink-interop"
        return {"bootstrap.servers": BOOTSTRAP}, "interop"

    def writer(self):
        """confluent-kafka settings of a producer: on the cluster the gateway user."""
        return cluster_client("gateway") if self.cluster else {"bootstrap.servers": BOOTSTRAP}

    def start(self, command, ready_url):
        log = open(os.path.join(os.path.dirname(self.config), f"{command}.log"), "w")
        env = {**os.environ, **self.env.get(command, {})}
        proc = subprocess.Popen([BIN, "--config", self.config, command], stdout=log, stderr=log, env=env)
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


@pytest.fixture(params=["broker", "cluster"])
def platform(request):
    cluster = request.param == "cluster"
    if cluster and not (CLUSTER_PORT and CLUSTER_STATE):
        pytest.skip(
            "no cluster: set TRIBUTARY_TEST_CLUSTER_PORT and TRIBUTARY_TEST_CLUSTER_STATE "
            "(scripts/test.sh does) to run confluent-kafka over SASL_SSL/SCRAM"
        )
    with tempfile.TemporaryDirectory() as workdir:
        p = Platform(workdir, cluster=cluster)
        try:
            yield p
        finally:
            p.stop()
