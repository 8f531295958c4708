"""The monitoring that ships in deploy/monitoring, checked with the real Prometheus.

- promtool checks the Prometheus config and rules, and runs the rules' unit tests;
- the Grafana dashboards are well formed (there is no Grafana here to load them);
- a whole local platform comes up through `tributary up` (what `make up` runs) on free ports,
  with Prometheus; while `tributary gen` sends traffic, every target is scraped,
  every rule evaluates without error, every recording rule and every dashboard panel's query
  returns data, and the dead-letter alert goes off on the malformed records gen writes while
  the broker and component alerts stay quiet.

scripts/test.sh runs it with TRIBUTARY_BIN set to the binary the Rust tests built.
"""

import json
import math
import os
import re
import shutil
import socket
import subprocess
import time
import urllib.parse
import urllib.request
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
MONITORING = ROOT / "deploy" / "monitoring"
DASHBOARDS = MONITORING / "grafana" / "dashboards"
BIN = os.environ.get("TRIBUTARY_BIN", "")


def tool(name):
    path = shutil.which(name)
    assert path, f"{name} is not installed: apt-get install prometheus (.ci/run installs it)"
    return path


def run(*args, cwd=None, timeout=120):
    out = subprocess.run(args, cwd=cwd, capture_output=True, text=True, timeout=timeout)
    assert out.returncode == 0, f"{' '.join(map(str, args))} failed:\n{out.stdout}\n{out.stderr}"
    return out.stdout


def test_config_and_rules_pass_promtool():
    promtool = tool("promtool")
    run(promtool, "check", "config", MONITORING / "prometheus.yml")
    # The Compose variant names rule files inside the container: check its syntax alone.
    out = run(promtool, "check", "config", "--syntax-only", MONITORING / "prometheus.compose.yml")
    assert "SUCCESS" in out, out
    out = run(promtool, "check", "rules", *sorted((MONITORING / "rules").glob("*.yml")))
    assert "SUCCESS" in out, out
    out = run(promtool, "test", "rules", "alerts.test.yml", cwd=MONITORING / "tests")
    assert "SUCCESS" in out, out


def dashboards():
    found = sorted(DASHBOARDS.glob("*.json"))
    assert len(found) >= 4, f"the four dashboards of the spec are missing in {DASHBOARDS}"
    return [(p.name, json.loads(p.read_text())) for p in found]


def panels(dashboard):
    for panel in dashboard.get("panels", []):
        yield panel
        yield from panel.get("panels", [])  # rows hold their panels when collapsed


def targets(dashboard):
    for panel in panels(dashboard):
        for target in panel.get("targets", []):
            yield panel.get("title", "?"), target


def variables(dashboard):
    """Name -> (metric, label) of every `label_values(metric, label)` variable."""
    found = {}
    for v in dashboard.get("templating", {}).get("list", []):
        query = v.get("query")
        query = query.get("query") if isinstance(query, dict) else query
        m = re.fullmatch(r"\s*label_values\(\s*([a-zA-Z_:][\w:]*)\s*,\s*(\w+)\s*\)\s*", query or "")
        assert m, f"variable {v.get('name')}: only label_values(metric, label) is supported: {query}"
        found[v["name"]] = (m.group(1), m.group(2))
    return found


def test_dashboards_are_well_formed():
    uids = set()
    for name, d in dashboards():
        assert d.get("uid") and d["uid"] not in uids, f"{name}: a missing or repeated uid"
        uids.add(d["uid"])
        assert d.get("title", "").startswith("Tributary / "), name
        variables(d)
        ts = list(targets(d))
        assert len(ts) >= 6, f"{name}: {len(ts)} queries"
        for title, t in ts:
            assert t.get("expr"), f"{name} / {title}: a target without a query"
        for p in panels(d):
            if p.get("type") == "row":
                continue
            ds = p.get("datasource") or {}
            assert ds.get("uid") == "prometheus", f"{name} / {p.get('title')}: datasource {ds}"


def concrete(expr):
    """A panel query as Grafana would send it with every variable on All."""
    expr = expr.replace("$__rate_interval", "1m").replace("${__rate_interval}", "1m")
    return re.sub(r"\$\{?\w+\}?", ".*", expr)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def get(url, timeout=5):
    with urllib.request.urlopen(url, timeout=timeout) as r:
        return json.loads(r.read())


class Prometheus:
    def __init__(self, addr):
        self.base = f"http://{addr}/api/v1"

    def query(self, expr):
        q = urllib.parse.urlencode({"query": expr})
        body = get(f"{self.base}/query?{q}")
        assert body["status"] == "success", body
        data = body["data"]
        if data["resultType"] == "scalar":
            return [data["result"][1]]
        return [s["value"][1] for s in data["result"]]

    def has_data(self, expr):
        return any(not math.isnan(float(v)) for v in self.query(expr))

    def label_values(self, metric, label):
        q = urllib.parse.urlencode({"match[]": metric})
        return get(f"{self.base}/label/{label}/values?{q}")["data"]

    def targets(self):
        return get(f"{self.base}/targets")["data"]["activeTargets"]

    def rules(self):
        return [r for g in get(f"{self.base}/rules")["data"]["groups"] for r in g["rules"]]

    def alerts(self):
        return get(f"{self.base}/alerts")["data"]["alerts"]


@pytest.fixture(scope="module")
def platform(tmp_path_factory):
    """`tributary up`, on free ports and a state folder of its own."""
    assert BIN and Path(BIN).is_file(), "set TRIBUTARY_BIN to the tributary binary (make test does)"
    tool("prometheus")
    tmp = tmp_path_factory.mktemp("platform")
    kafka, gateway, registry, processor, sink, prom, kmetrics = (free_port() for _ in range(7))
    env = dict(
        os.environ,
        TRIBUTARY_ROOT=str(ROOT),
        TRIBUTARY_CONFIG=str(tmp / "none.toml"),
        TRIBUTARY_STATE_DIR=str(tmp / "state"),
        KAFKA_PORT=str(kafka),
        KAFKA_CONTROLLER_PORT=str(free_port()),
        KAFKA_STATE_DIR=str(tmp / "kafka"),
        KAFKA_HEAP="512m",
        KAFKA_METRICS_PORT=str(kmetrics),
        TRIBUTARY_KAFKA__BOOTSTRAP_SERVERS=f"127.0.0.1:{kafka}",
        TRIBUTARY_GATEWAY__LISTEN=f"127.0.0.1:{gateway}",
        TRIBUTARY_GATEWAY__REGISTRY__URL=f"http://127.0.0.1:{registry}",
        TRIBUTARY_REGISTRY__LISTEN=f"127.0.0.1:{registry}",
        TRIBUTARY_PROCESSOR__LISTEN=f"127.0.0.1:{processor}",
        TRIBUTARY_PROCESSOR__REGISTRY__URL=f"http://127.0.0.1:{registry}",
        TRIBUTARY_SINK__LISTEN=f"127.0.0.1:{sink}",
        TRIBUTARY_SINK__REGISTRY__URL=f"http://127.0.0.1:{registry}",
        TRIBUTARY_SINK__DATABASE=str(tmp / "warehouse.duckdb"),
        TRIBUTARY_PROMETHEUS_LISTEN=f"127.0.0.1:{prom}",
    )
    (tmp / "none.toml").write_text("")
    up = subprocess.run([BIN, "up"], env=env, cwd=tmp, capture_output=True, text=True, timeout=300)
    gen = None
    try:
        assert up.returncode == 0, f"tributary up failed:\n{up.stdout}\n{up.stderr}"
        assert f"http://127.0.0.1:{prom}" in up.stdout, up.stdout
        gen = subprocess.Popen(
            [BIN, "gen", "--rate", "300", "--duration", "240", "--seed", "7",
             "--gateway", f"http://127.0.0.1:{gateway}"],
            env=env, stdout=subprocess.DEVNULL, stderr=open(tmp / "gen.log", "w"),
        )
        yield Prometheus(f"127.0.0.1:{prom}"), tmp
    finally:
        if gen:
            gen.kill()
            gen.wait()
        subprocess.run([BIN, "down"], env=env, cwd=tmp, capture_output=True, timeout=180)


def wait_until(what, check, timeout):
    deadline = time.monotonic() + timeout
    while True:
        missing = check()
        if not missing:
            return
        if time.monotonic() > deadline:
            pytest.fail(f"{what} after {timeout} s: {missing}")
        time.sleep(2)


def test_every_target_is_scraped_and_every_rule_evaluates(platform):
    prom, _ = platform
    wait_until(
        "targets not up",
        lambda: [(t["labels"]["job"], t["lastError"]) for t in prom.targets() if t["health"] != "up"]
        or (set(t["labels"]["job"] for t in prom.targets()) ^ {"gateway", "processor", "sink", "kafka"}),
        60,
    )
    wait_until(
        "rules not evaluated cleanly",
        lambda: [(r["name"], r.get("health"), r.get("lastError")) for r in prom.rules()
                 if r.get("health") != "ok"],
        60,
    )
    names = {r["name"] for r in prom.rules()}
    assert {"kafka_consumer_lag", "kafka_producer_throughput", "TributaryConsumerLagHigh",
            "TributaryApiErrorRateHigh", "KafkaBrokerDown", "TributaryDeadLettersIncreasing"} <= names


def test_recording_rules_and_dashboard_queries_return_data(platform):
    prom, _ = platform
    recorded = [r["name"] for r in prom.rules() if r["type"] == "recording"]
    queries = [("recording rule", name, name) for name in recorded]
    for name, d in dashboards():
        for var, (metric, label) in variables(d).items():
            # The variable's values come from the live data, as Grafana would find them.
            queries.append((name, f"${var}", f"count({metric}) by ({label})"))
        for title, t in targets(d):
            queries.append((name, title, concrete(t["expr"])))
    # Window results need a window to close: up to a minute and a quarter after traffic starts.
    wait_until(
        "queries without data",
        lambda: [(where, title, expr) for where, title, expr in queries if not prom.has_data(expr)],
        180,
    )
    for name, d in dashboards():
        for var, (metric, label) in variables(d).items():
            assert prom.label_values(metric, label), f"{name}: ${var} has no values"


def test_the_dead_letter_alert_goes_off_and_the_others_stay_quiet(platform):
    prom, _ = platform

    def active():
        return {a["labels"]["alertname"]: a["state"] for a in prom.alerts()}

    # gen writes a share of malformed records straight to Kafka; the processor dead-letters them.
    wait_until(
        "TributaryDeadLettersIncreasing not pending or firing",
        lambda: [] if active().get("TributaryDeadLettersIncreasing") in ("pending", "firing")
        else active(),
        180,
    )
    quiet = {"KafkaBrokerDown", "TributaryComponentDown", "TributaryGatewayCannotReachKafka",
             "KafkaOfflinePartitions", "TributaryApiErrorRateHigh", "TributaryProcessorRestarting"}
    assert not quiet & set(active()), active()
