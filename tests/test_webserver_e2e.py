"""`scorehouse ui` starts the real dagster-webserver and daemon; a run launched through GraphQL succeeds;
SIGTERM stops every process it started."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import duckdb
import psutil
import pytest
import requests

ROOT = Path(__file__).parents[1]
BIN = Path(sys.executable).parent

pytestmark = pytest.mark.e2e

ASSETS = "{ assetNodes { assetKey { path } groupName } }"
LAUNCH = """mutation($p: ExecutionParams!) { launchRun(executionParams: $p) {
  __typename ... on LaunchRunSuccess { run { runId } } ... on PythonError { message } } }"""
STATUS = """query($id: ID!) { runOrError(runId: $id) { __typename ... on Run { status } } }"""
TERMINAL = {"SUCCESS", "FAILURE", "CANCELED"}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for(predicate, what: str, timeout: float = 180.0, step: float = 0.5):
    """Poll a condition the system under test must reach (not a sleep standing in for a result)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(step)
    raise AssertionError(f"timed out waiting for {what}")


def gql(url: str, query: str, variables: dict | None = None) -> dict:
    r = requests.post(f"{url}/graphql", json={"query": query, "variables": variables or {}}, timeout=30)
    r.raise_for_status()
    body = r.json()
    assert "errors" not in body, body
    return body["data"]


def test_ui_serves_graph_runs_job_and_stops_cleanly(tmp_path, relax_gates):
    landing, home = tmp_path / "landing", tmp_path / "home"
    subprocess.run([str(BIN / "scorehouse"), "generate", "--customers", "300", "--out", str(landing)],
                   check=True, capture_output=True)
    # 300 customers cannot support the production gates (e.g. churn AUC >= 0.80 on a ~60-customer holdout):
    # this test is about the UI, so its home relaxes them the way a user would, in <home>/scorehouse.yaml.
    relax_gates(home)
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SCOREHOUSE_", "DAGSTER_"))}
    # Output goes to a file, not a pipe: nobody reads a pipe until the end, and once its buffer is full the
    # webserver, daemon and runs block on writing their logs.
    log = (tmp_path / "ui.log").open("w+b")
    ui = subprocess.Popen([str(BIN / "scorehouse"), "ui", "--home", str(home), "--landing", str(landing),
                           "--port", str(port)], cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        def up():
            try:
                return requests.get(f"{url}/server_info", timeout=2).ok
            except requests.ConnectionError:
                return False

        wait_for(up, "the webserver to answer")
        nodes = wait_for(lambda: gql(url, ASSETS)["assetNodes"], "the code location to load")
        keys = {"/".join(n["assetKey"]["path"]) for n in nodes}
        assert {"raw/customers", "raw/transactions", "features/customer_features"} <= keys
        assert {n["groupName"] for n in nodes} == {"ingest", "features", "training", "scoring", "serving"}

        params = {"selector": {"repositoryLocationName": "orchestration.definitions",
                               "repositoryName": "__repository__", "jobName": "scorehouse"}}
        launched = gql(url, LAUNCH, {"p": params})["launchRun"]
        assert launched["__typename"] == "LaunchRunSuccess", launched
        run_id = launched["run"]["runId"]
        status = wait_for(lambda: (s := gql(url, STATUS, {"id": run_id})["runOrError"]["status"]) in TERMINAL and s,
                          "the run to finish", timeout=300)
        assert status == "SUCCESS"
        children = psutil.Process(ui.pid).children(recursive=True)
        assert len(children) >= 2  # webserver, daemon (and their code servers)
    finally:
        ui.send_signal(signal.SIGTERM)
        ui.wait(timeout=60)
        log.close()
        out = (tmp_path / "ui.log").read_text(errors="replace")
    assert ui.returncode == 0, out
    assert "stopped webserver and daemon" in out
    assert not [p for p in children if p.is_running() and p.status() != psutil.STATUS_ZOMBIE]
    with duckdb.connect(str(home / "warehouse.duckdb"), read_only=True) as con:
        assert con.execute("SELECT count(*) FROM raw.customers").fetchone()[0] == 300
        population = con.execute("SELECT count(*) FROM features.population").fetchone()[0]
        assert con.execute("SELECT count(*) FROM scores.churn").fetchone()[0] == population
