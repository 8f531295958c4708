"""The broker rules and the Kafka dashboard against Amazon MSK's metric names.

test_monitoring.py proves them against the local broker's JMX exporter. On AWS the brokers are
MSK's, whose open monitoring names the same MBeans differently; deploy/monitoring/rules/msk.yml
maps those names onto the local ones. Here a real Prometheus scrapes an MSK-style exposition
(msk-broker.prom, served over HTTP as job `kafka`, as the production collector names it) with
every rule file of deploy/monitoring/rules loaded, and:

- every mapping rule of msk.yml and every query of the Kafka dashboard returns data;
- every broker alert of tributary.yml goes off on the unhealthy broker the exposition describes
  (KafkaBrokerDown's expression, `up{job="kafka"}`, answers 1 for it).

No platform is needed: a few seconds of Prometheus.
"""

import http.server
import json
import re
import subprocess
import threading
import time
from pathlib import Path

import pytest
import yaml

from test_monitoring import (
    DASHBOARDS,
    MONITORING,
    Prometheus,
    concrete,
    free_port,
    get,
    targets,
    tool,
    variables,
    wait_until,
)

EXPOSITION = Path(__file__).with_name("msk-broker.prom")
BROKER_ALERTS = {"KafkaOfflinePartitions", "KafkaUnderReplicatedPartitions", "TributaryDeadLettersIncreasing"}


def exposition(started):
    """The recorded scrape, its *_Count counters grown by 10 a second per series since `started`."""
    grown = int((time.monotonic() - started) * 10)
    lines = []
    for line in EXPOSITION.read_text().splitlines():
        m = re.fullmatch(r"(\w+_Count\{[^}]*\}) (\S+)", line)
        if m:
            line = f"{m.group(1)} {float(m.group(2)) + grown}"
        lines.append(line)
    return ("\n".join(lines) + "\n").encode()


@pytest.fixture(scope="module")
def msk_prometheus(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("msk")
    started = time.monotonic()

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            body = exposition(started)
            self.send_response(200)
            self.send_header("Content-Type", "text/plain; version=0.0.4")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    broker = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=broker.serve_forever, daemon=True).start()
    prom_port = free_port()
    config = {
        "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
        "rule_files": [str(p) for p in sorted((MONITORING / "rules").glob("*.yml"))],
        "scrape_configs": [
            {"job_name": "kafka", "static_configs": [{"targets": [f"127.0.0.1:{broker.server_address[1]}"]}]},
        ],
    }
    (tmp / "prometheus.yml").write_text(json.dumps(config))
    log = open(tmp / "prometheus.log", "w")
    proc = subprocess.Popen(
        [tool("prometheus"), f"--config.file={tmp / 'prometheus.yml'}", f"--storage.tsdb.path={tmp / 'data'}",
         f"--web.listen-address=127.0.0.1:{prom_port}"],
        stdout=log, stderr=subprocess.STDOUT,
    )
    try:
        prom = Prometheus(f"127.0.0.1:{prom_port}")

        def not_ready():
            try:
                return [t["lastError"] for t in prom.targets() if t["health"] != "up"] or (not prom.targets() and "no target")
            except OSError as err:
                return str(err)

        wait_until("the MSK-style target not scraped", not_ready, 30)
        yield prom
    finally:
        proc.terminate()
        proc.wait(timeout=30)
        broker.shutdown()


def rules_of(name):
    return yaml.safe_load((MONITORING / "rules" / name).read_text())["groups"]


def test_msk_names_map_onto_the_local_ones(msk_prometheus):
    prom = msk_prometheus
    mapped = sorted({r["record"] for g in rules_of("msk.yml") for r in g["rules"]})
    assert mapped, "msk.yml records nothing"
    wait_until("mapped names without data", lambda: [n for n in mapped if not prom.has_data(n)], 30)
    # Every recorded series keeps its broker and drops MSK's `name` label.
    for series in get(f"{prom.base}/query?query=kafka_server_replicamanager_underreplicatedpartitions")["data"]["result"]:
        assert "name" not in series["metric"] and series["metric"]["job"] == "kafka", series
    # The all-topics series is not taken for a topic.
    topics = prom.label_values("kafka_server_brokertopicmetrics_messagesin_total", "topic")
    assert sorted(topics) == ["events.clickstream", "events.dlq", "events.iot.sensors"], topics


def test_the_kafka_dashboard_returns_data_from_msk_names(msk_prometheus):
    prom = msk_prometheus
    d = json.loads((DASHBOARDS / "kafka-cluster.json").read_text())
    queries = [(f"${var}", f"count({metric}) by ({label})") for var, (metric, label) in variables(d).items()]
    queries += [(title, concrete(t["expr"])) for title, t in targets(d)]
    # Rates need two recorded samples of a counter that has grown.
    wait_until("Kafka panels without data", lambda: [(t, e) for t, e in queries if not prom.has_data(e)], 60)


def test_every_broker_alert_goes_off_on_msk_names(msk_prometheus):
    prom = msk_prometheus
    alerts = {r["alert"]: r for g in rules_of("tributary.yml") for r in g["rules"] if "alert" in r}
    # A broker rule reads a broker metric (kafka_server_*, kafka_controller_*, ...) or job kafka.
    broker_metric = re.compile(r'kafka_(server|controller|network|log)_|job="kafka"')
    broker = {name for name, r in alerts.items() if broker_metric.search(r["expr"])}
    assert broker == BROKER_ALERTS | {"KafkaBrokerDown"}, broker
    assert prom.query('up{job="kafka"}') == ["1"]

    def quiet():
        active = {a["labels"]["alertname"] for a in prom.alerts() if a["state"] in ("pending", "firing")}
        return sorted(BROKER_ALERTS - active)

    # The DLQ alert needs the dead-letter topic's counter to have grown within its range.
    wait_until("broker alerts not pending or firing", quiet, 60)
    assert not {a["labels"]["alertname"] for a in prom.alerts()} & {"KafkaBrokerDown", "TributaryComponentDown"}
