"""The typed settings: each default in one place, bad keys and values refused with the file and key path, by
every `scorehouse` command that reads them and when the definitions load; `scorehouse settings` shows where
each value came from."""

from __future__ import annotations

import ast
import subprocess
import sys
import typing
from pathlib import Path

import pytest
import yaml
from pydantic import BaseModel

import ml.params
from assets.settings import (
    ModelSettings,
    ScorehouseSettings,
    SettingsError,
    WarehouseSettings,
    load_settings,
    source_config,
)
from ml import churn, clv, credit_risk, recommend, segments
from tests.commands import SCOREHOUSE, clean_env
from warehouse.sources import SourceConfigError

ROOT = Path(__file__).parents[1]
SYNTHETIC = ROOT / "warehouse" / "sources" / "synthetic.yaml"


def scorehouse(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([SCOREHOUSE, *args], capture_output=True, text=True, cwd=ROOT,
                          env=clean_env(**(env or {})), timeout=300)


def home_with(tmp_path: Path, text: str) -> Path:
    home = tmp_path / "home"
    home.mkdir(exist_ok=True)
    (home / "scorehouse.yaml").write_text(text)
    return home


def refused(r: subprocess.CompletedProcess) -> list[str]:
    """The error lines of a command refused for its settings: exit 2, plain lines, no traceback or pydantic."""
    assert r.returncode == 2, (r.returncode, r.stdout[-2000:], r.stderr[-2000:])
    assert "Traceback" not in r.stderr and "pydantic" not in r.stderr.lower(), r.stderr
    lines = r.stderr.strip().splitlines()
    assert lines and all(line.startswith("error: ") for line in lines), r.stderr
    return lines


# ------------------------------------------------------------------------------------ through the real CLI

def test_a_mistyped_key_in_the_home_config_stops_every_command(tmp_path):
    home = home_with(tmp_path, "models:\n  churn:\n    params:\n      n_estimatrs: 300\n")
    landing = tmp_path / "landing"
    landing.mkdir()
    expected = f"error: {home}/scorehouse.yaml: models.churn.params.n_estimatrs: unknown key"
    for args in (["run", "--job", "ingest", "--landing", str(landing)], ["alerts", "log"], ["settings"],
                 ["ui", "--landing", str(landing), "--port", "3999"]):
        (line,) = refused(scorehouse(*args, "--home", str(home)))
        assert line.startswith(expected) and "did you mean n_estimators?" in line, (args, line)
        assert "(allowed: n_estimators, max_depth, learning_rate" in line, line


def test_a_wrong_type_exits_2_naming_the_key_and_what_is_allowed(tmp_path):
    home = home_with(tmp_path, "sensors:\n  landing_interval_seconds: soon\n"
                               "models:\n  churn:\n    risk_cutoffs: [0.6, 0.3]\n")
    lines = refused(scorehouse("run", "--home", str(home), "--landing", str(tmp_path)))
    assert lines == [
        f"error: {home}/scorehouse.yaml: sensors.landing_interval_seconds: expected a whole number, got soon",
        f"error: {home}/scorehouse.yaml: models.churn.risk_cutoffs: expected 2 numbers in (0, 1), the lower first, "
        "got [0.6, 0.3]",
    ]


def test_a_typo_in_a_source_configs_settings_names_the_source_file(tmp_path):
    doc = yaml.safe_load(SYNTHETIC.read_text())
    doc["settings"]["models"]["clv"]["parms"] = {"horizon_months": 6}
    source = tmp_path / "my_bank.yaml"
    source.write_text(yaml.safe_dump(doc))
    (line,) = refused(scorehouse("run", "--source", str(source), "--home", str(tmp_path / "home")))
    assert line.startswith(f"error: {source}: settings.models.clv.parms: unknown key; did you mean params?"), line


def test_settings_command_shows_each_value_and_where_it_came_from(tmp_path, monkeypatch):
    home = home_with(tmp_path, "models:\n  churn:\n    params: {n_estimators: 200}\n")
    env_file = tmp_path / "ops.yaml"
    env_file.write_text("models:\n  churn:\n    params: {max_depth: 5}\n")
    r = scorehouse("settings", "--home", str(home), env={"SCOREHOUSE_CONFIG": str(env_file)})
    assert r.returncode == 0, r.stderr
    out = r.stdout.splitlines()

    def line(key: str) -> str:
        return next(s for s in out if s.strip().startswith(f"{key}:"))

    assert line("n_estimators").split("#")[0].strip() == "n_estimators: 200"
    assert line("n_estimators").endswith(f"# {home}/scorehouse.yaml")
    assert line("max_depth").endswith("# $SCOREHOUSE_CONFIG")  # the first max_depth: churn's
    assert line("learning_rate").endswith("# default")
    assert line("holdout_abs_error").endswith("# source synthetic")  # the demo's own CLV gate
    assert "XGBoost trees" in r.stdout  # what each knob does, from the model's descriptions
    # what it prints is the YAML of exactly the settings a run uses
    monkeypatch.setenv("SCOREHOUSE_CONFIG", str(env_file))
    assert yaml.safe_load(r.stdout) == load_settings(home, "synthetic")


def test_the_definitions_do_not_load_with_a_bad_home_config(tmp_path):
    home = home_with(tmp_path, "schedules:\n  daily_scoring: {cron: daily}\n")
    r = subprocess.run([sys.executable, "-c", "import orchestration.definitions"], capture_output=True, text=True,
                       cwd=ROOT, env=clean_env(SCOREHOUSE_HOME=str(home)), timeout=300)
    assert r.returncode != 0
    assert (f"SettingsError: {home}/scorehouse.yaml: schedules.daily_scoring.cron: expected a cron expression of "
            "5 fields") in r.stderr, r.stderr[-3000:]


# ------------------------------------------------------------------------------------------- merging, errors

def test_layers_merge_key_by_key_in_order(tmp_path, monkeypatch):
    source = tmp_path / "bank.yaml"
    doc = yaml.safe_load(SYNTHETIC.read_text())
    doc["settings"] = {"models": {"churn": {"label": "left", "params": {"seed": 1, "max_depth": 2}}}}
    source.write_text(yaml.safe_dump(doc))
    home = home_with(tmp_path, "models:\n  churn:\n    params: {seed: 2}\n")
    env_file = tmp_path / "ops.yaml"
    env_file.write_text("models:\n  churn:\n    params: {seed: 3}\n")
    monkeypatch.setenv("SCOREHOUSE_CONFIG", str(env_file))
    churn = load_settings(home, str(source))["models"]["churn"]
    # defaults < source < <home>/scorehouse.yaml < $SCOREHOUSE_CONFIG, each only where it says something
    assert (churn["label"], churn["params"]["max_depth"], churn["params"]["seed"]) == ("left", 2, 3)
    assert churn["params"]["n_estimators"] == 150 and churn["gate"]["min"] == {"auc": 0.8}
    monkeypatch.setenv("SCOREHOUSE_CONFIG", str(tmp_path / "missing.yaml"))
    with pytest.raises(SettingsError, match=r"missing.yaml \(\$SCOREHOUSE_CONFIG\): no such file"):
        load_settings(home)


def test_a_source_config_is_checked_when_it_loads(tmp_path):
    doc = yaml.safe_load(SYNTHETIC.read_text())
    doc["settings"] = {"monitoring": {"drift": {"psi_warn": 0.3, "psi_alert": 0.2}},
                       "models": {"credit_risk": {"params": {"xgb": {"depth": 2}}}}}
    source = tmp_path / "bank.yaml"
    source.write_text(yaml.safe_dump(doc))
    with pytest.raises(SourceConfigError) as e:
        source_config(source)
    assert str(e.value).splitlines() == [
        f"{source}: settings.monitoring.drift.psi_alert: psi_alert (0.2) is below psi_warn (0.3)",
        f"{source}: settings.models.credit_risk.params.xgb.depth: unknown key; did you mean max_depth? (allowed: "
        "n_estimators, max_depth, learning_rate, subsample, colsample_bytree, min_child_weight)",
    ]
    doc["settings"] = ["models"]
    source.write_text(yaml.safe_dump(doc))
    with pytest.raises(SourceConfigError, match="settings: expected a mapping"):
        source_config(source)


def test_every_shipped_source_config_has_valid_settings():
    from warehouse.sources import available_sources

    for name in available_sources():
        assert source_config(name).name == name
    recommendations = load_settings(None, "bank_marketing")["models"]["recommendations"]
    assert recommendations["gate"]["min"]["auc"] == 0.79 and recommendations["gate"]["min"]["coverage"] == 0.8


def test_gates_thresholds_can_be_dropped_and_tiers_replaced(tmp_path):
    home = home_with(tmp_path, "models:\n  churn:\n    gate: {min: null, max: {brier: null}}\n"
                               "  clv:\n    params:\n      tiers: [[Top, 0.2], [Rest, null]]\n")
    models = load_settings(home)["models"]
    assert models["churn"]["gate"]["min"] == {} and models["churn"]["gate"]["max"] == {}
    assert models["clv"]["params"]["tiers"] == {"Top": 0.2, "Rest": None}  # a list replaces the default tiers
    home = home_with(tmp_path, "models:\n  clv:\n    params:\n      tiers: {Top: 0.2, Rest: null}\n")
    with pytest.raises(SettingsError, match=r"models.clv.params.tiers: only the last tier may be null"):
        load_settings(home)  # a mapping merges with Platinum, Gold, Silver, Bronze


def test_the_iceberg_backend_needs_a_lake_and_keeps_its_shards_in_bounds(tmp_path):
    assert load_settings(home_with(tmp_path, ""))["warehouse"]["backend"] == "duckdb"  # the embedded default
    with pytest.raises(SettingsError, match=r"warehouse: backend iceberg needs lake.location"):
        load_settings(home_with(tmp_path, "warehouse:\n  backend: iceberg\n"))
    with pytest.raises(SettingsError, match=r"warehouse.lake.shards: "):
        load_settings(home_with(tmp_path, "warehouse:\n  lake: {location: /x, shards: 0}\n"))
    lake = load_settings(home_with(tmp_path, "warehouse:\n  backend: iceberg\n  lake: {location: /x, shards: 8}\n"))
    assert lake["warehouse"]["lake"]["shards"] == 8


def test_run_flags_are_the_last_layer_and_a_bad_one_is_refused_naming_the_flag(tmp_path):
    home = home_with(tmp_path, "warehouse:\n  lake: {location: /from/yaml, shards: 2}\n")
    landing = tmp_path / "landing"
    landing.mkdir()
    # --shards 0: the flags are checked like the files, before anything runs
    (line,) = refused(scorehouse("run", "--home", str(home), "--landing", str(landing), "--backend", "iceberg",
                                 "--shards", "0"))
    assert line.startswith("error: the command line's flags: warehouse.lake.shards: "), line
    # iceberg without a catalog URL: said before the run starts
    (line,) = refused(scorehouse("run", "--home", str(home), "--landing", str(landing), "--backend", "iceberg"))
    assert "needs the catalog's URL: --catalog postgresql://" in line, line
    r = scorehouse("settings", "--home", str(home),
                   env={"SCOREHOUSE_SETTINGS": '{"warehouse": {"backend": "iceberg", "lake": {"shards": 4}}}'})
    assert r.returncode == 0, r.stderr
    shown = {line.split(":")[0].strip(): line for line in r.stdout.splitlines() if line.strip().startswith(
        ("backend:", "shards:", "location:"))}
    assert "iceberg" in shown["backend"] and "command line" in shown["backend"], shown
    assert "4" in shown["shards"] and "command line" in shown["shards"], shown
    assert "/from/yaml" in shown["location"] and "scorehouse.yaml" in shown["location"], shown


def test_executors_from_settings(monkeypatch):
    import dagster as dg

    from orchestration.executors import executor_for

    assert executor_for({"executor": None, "max_concurrent": 2}, "in_process") is dg.in_process_executor
    assert executor_for({"executor": None, "max_concurrent": 3}, "multiprocess").name == "multiprocess"
    assert executor_for({"executor": "multiprocess", "max_concurrent": 2}, "in_process").name == "multiprocess"
    for kind, package in (("k8s", "dagster_k8s"), ("celery", "dagster_celery")):
        monkeypatch.setitem(sys.modules, package, None)  # as on a machine without the optional package
        with pytest.raises(SettingsError, match=rf"execution.executor: {kind} needs the .* package, not installed "
                                                rf"here: pip install 'scorehouse\[{kind}\]'"):
            executor_for({"executor": kind, "max_concurrent": 2}, "in_process")


def test_bad_yaml_and_a_bad_channel_are_one_line_each(tmp_path):
    home = home_with(tmp_path, "models: [unclosed\n")
    with pytest.raises(SettingsError) as e:
        load_settings(home)
    assert len(e.value.problems) == 1 and "scorehouse.yaml: not valid YAML" in str(e.value)
    home = home_with(tmp_path, "alerts:\n  channels:\n    ops: {type: email, host_env: OPS_HOST}\n"
                               "  routes: {run_failure: [ops, pager]}\n")
    with pytest.raises(SettingsError) as e:
        load_settings(home)
    assert e.value.problems == [f"{home}/scorehouse.yaml: alerts.channels.ops.to_env: required, missing"]
    home = home_with(tmp_path, "alerts:\n  channels:\n    ops: {type: email, host_env: H, to_env: T}\n"
                               "  routes: {run_failure: [ops, pager]}\n")
    with pytest.raises(SettingsError) as e:
        load_settings(home)
    assert e.value.problems == [f"{home}/scorehouse.yaml: alerts.routes: run_failure: unknown channel pager "
                                "(channels: slack, webhook, email, ops)"]


# ------------------------------------------------------------------------------------------ one place

def test_model_parameters_are_the_ml_classes_with_their_own_defaults():
    models = ScorehouseSettings().models
    for name, cls in (("churn", ml.params.ChurnTraining), ("segments", ml.params.SegmentParams),
                      ("clv", ml.params.CLVParams), ("credit_risk", ml.params.CreditParams),
                      ("recommendations", ml.params.RecommendParams)):
        section = ModelSettings.model_fields[name].annotation
        assert section.model_fields["params"].annotation is cls, name  # composed, not copied
        assert getattr(models, name).params == cls(), name  # no default overridden on the way
    assert models.churn.risk_cutoffs == ml.params.ChurnParams().risk_cutoffs
    # the model modules use these very classes; no module of ml/ defines another *Params
    assert churn.ChurnParams is ml.params.ChurnParams and clv.CLVParams is ml.params.CLVParams
    assert credit_risk.CreditParams is ml.params.CreditParams and segments.SegmentParams is ml.params.SegmentParams
    assert recommend.RecommendParams is ml.params.RecommendParams
    for path in (ROOT / "ml").glob("*.py"):
        if path.name != "params.py":
            classes = [n.name for n in ast.walk(ast.parse(path.read_text())) if isinstance(n, ast.ClassDef)]
            assert not [c for c in classes if c.endswith("Params")], path


def _keys(model: type, seen: set) -> set[str]:
    """Every key name of the settings model, nested models included."""
    out = set()
    for name, field in model.model_fields.items():
        out.add(name)
        stack = [field.annotation]
        while stack:
            t = stack.pop()
            if isinstance(t, type) and issubclass(t, BaseModel) and t not in seen:
                seen.add(t)
                out |= _keys(t, seen)
            stack += list(typing.get_args(t))
    return out


def test_no_second_copy_of_a_default():
    # no defaults file beside the model: docs/settings.md is generated from it
    assert not list((ROOT / "orchestration").glob("*.yaml"))
    # no `cfg.get("key", fallback)` in the code that reads settings: the validated settings hold every key
    # (`settings.get("section", "key")` is the Settings resource reading a path, not a fallback)
    keys = _keys(ScorehouseSettings, set())
    fallbacks = []
    for folder in ("assets", "orchestration", "quality", "ml"):
        for path in (ROOT / folder).glob("*.py"):
            for node in ast.walk(ast.parse(path.read_text())):
                if (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "get"
                        and len(node.args) == 2 and isinstance(node.args[0], ast.Constant)
                        and node.args[0].value in keys
                        and not (isinstance(node.func.value, ast.Name) and node.func.value.id == "settings")
                        and not (isinstance(node.args[1], ast.Constant) and node.args[1].value is None)):
                    fallbacks.append(f"{path.relative_to(ROOT)}:{node.lineno} .get({node.args[0].value!r}, ...)")
    assert not fallbacks, fallbacks
    # resources built without settings take the model's defaults, not their own
    from assets.resources import Warehouse

    wh = Warehouse(home="x")
    shared = ("memory_limit", "threads", "run_lock_wait_seconds")  # the settings the resource holds
    assert (wh.memory_limit, wh.threads, wh.run_lock_wait_seconds) == tuple(WarehouseSettings().model_dump()[k]
                                                                             for k in shared)


def test_settings_doc_is_current():
    from orchestration.settings_doc import render_page

    assert (ROOT / "docs" / "settings.md").read_text() == render_page(), (
        "docs/settings.md is stale: run `python -m orchestration.settings_doc > docs/settings.md`")


def test_reading_settings_loads_no_model_library_nor_dagster():
    code = ("import sys, assets.settings as s; s.load_settings(); "
            "print(sorted({'dagster', 'xgboost', 'sklearn', 'scipy'} & set(sys.modules)))")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert r.returncode == 0 and r.stdout.strip() == "[]", (r.stdout, r.stderr)


@pytest.mark.parametrize("sql", ["amount < 0; DROP TABLE raw.transactions", "(SELECT 1)", "getenv('HOME') = ''"])
def test_sql_settings_must_be_one_expression(tmp_path, sql):
    """models.clv.event_filter and features.book.activity_filter are pasted into queries: anything but one
    expression is refused."""
    for block, key in ((("models", "clv"), "event_filter"), (("features", "book"), "activity_filter")):
        (tmp_path / "scorehouse.yaml").write_text(yaml.safe_dump({block[0]: {block[1]: {key: sql}}}))
        with pytest.raises(SettingsError, match=f"{'.'.join(block)}.{key}"):
            load_settings(tmp_path)
