"""The one Definitions entry point loads, and every asset carries what a user looks at in the UI."""

import os
import subprocess
import sys
from pathlib import Path

import dagster as dg

from orchestration.definitions import defs
from tests.commands import clean_env
from warehouse.contract import TABLES

ROOT = Path(__file__).resolve().parents[1]


def test_definitions_load_and_validate():
    dg.Definitions.validate_loadable(defs)
    graph = defs.resolve_asset_graph()
    keys = {k.to_user_string() for k in graph.get_all_asset_keys()}
    assert {f"raw/{t}" for t in TABLES} <= keys
    assert {"features/population", "features/rfm", "features/balances", "features/holdings",
            "features/labels", "features/customer_features"} <= keys


def test_every_asset_has_docstring_group_kinds_and_pool():
    graph = defs.resolve_asset_graph()
    for key in graph.get_all_asset_keys():
        node = graph.get(key)
        assert node.description, f"{key} has no description"
        assert node.group_name in {"ingest", "features", "training", "scoring", "serving"}, key
        assert node.kinds, f"{key} has no kinds"
        assert node.pools == {"warehouse"}, f"{key} does not run in the warehouse pool"


def test_jobs_sensor_and_checks():
    assert {j.name for j in defs.resolve_all_job_defs()} >= {"scorehouse", "ingest", "score", "retrain", "train_churn"}
    sensor = defs.resolve_sensor_def("landing_files")
    assert sensor.default_status == dg.DefaultSensorStatus.RUNNING
    graph = defs.resolve_asset_graph()
    checks = {(k.asset_key.to_user_string(), k.name) for k in graph.asset_check_keys}
    assert ("raw/transactions", "rows_reconcile") in checks
    assert ("raw/transactions", "gx_contract") in checks
    assert ("features/customer_features", "features_unique_customers") in checks
    for name in ("scorehouse", "ingest", "score", "retrain", "train_churn"):
        job = defs.resolve_job_def(name)
        assert job.run_tags.get("scorehouse/warehouse") == "write", name  # queued one writing run at a time
        # every step that opens the DuckDB file, checks included, holds the one `warehouse` slot (Dagster's
        # freshness checks read only its own storage)
        assert {op.pool for op in job.graph.iterate_op_defs() if "freshness" not in op.name} == {"warehouse"}, name
        # BI's serving file is published by every job that scores, and only by those
        published = dg.AssetKey(["serving", "published"]) in job.asset_layer.executable_asset_keys
        assert published == (name in ("scorehouse", "score")), name
    for model in ("churn", "segments", "recommendations", "credit_risk", "clv"):
        assert (f"scores/{model}", f"{model}_drift") in checks and (f"scores/{model}", "freshness_check") in checks


def test_daily_scoring_and_weekly_retrain_are_on_by_default_with_cron_from_settings(tmp_path):
    from assets.settings import load_settings
    from orchestration.jobs import build_jobs, build_schedules

    shipped = {s.name: s for s in defs.schedules}
    assert shipped["daily_scoring"].job_name == "score" and shipped["weekly_retrain"].job_name == "retrain"
    assert all(s.default_status == dg.DefaultScheduleStatus.RUNNING for s in shipped.values())
    # a user's scorehouse.yaml moves a schedule and turns another off
    (tmp_path / "scorehouse.yaml").write_text(
        "schedules:\n  daily_scoring: {cron: '30 5 * * 1-5'}\n  weekly_retrain: {enabled: false}\n")
    jobs = {j.name: j for j in build_jobs(["churn"])}
    mine = {s.name: s for s in build_schedules(load_settings(tmp_path), jobs)}
    assert mine["daily_scoring"].cron_schedule == "30 5 * * 1-5"
    assert mine["weekly_retrain"].cron_schedule == "0 3 * * 0"
    assert mine["weekly_retrain"].default_status == dg.DefaultScheduleStatus.STOPPED


def test_score_job_scores_without_training_and_retrain_trains_without_scoring():
    def keys(job):
        return {k.to_user_string() for k in defs.resolve_job_def(job).asset_layer.executable_asset_keys}

    assert "scores/churn" in keys("score") and not any(k.startswith("ml/") for k in keys("score"))
    assert "ml/churn_champion" in keys("retrain") and not any(k.startswith("scores/") for k in keys("retrain"))
    assert keys("train_churn") == {"ml/churn_challenger", "ml/churn_champion", "serving/run_report"}
    # every job with models reports what became of them (and tags its run); the ingest-only ones do not
    for job in ("scorehouse", "score", "retrain", "train_churn"):
        assert "serving/run_report" in keys(job), job
    assert "serving/run_report" not in keys("ingest") | keys("features")


def test_assets_have_owners_domains_and_described_columns():
    graph = defs.resolve_asset_graph()
    churn, raw_customers = graph.get(dg.AssetKey(["scores", "churn"])), graph.get(dg.AssetKey(["raw", "customers"]))
    assert churn.owners == ["team:data-science"] and churn.tags["domain"] == "retention"
    assert raw_customers.owners == ["team:data-engineering"] and raw_customers.tags["pii"] == "true"
    assert all(graph.get(k).owners for k in graph.get_all_asset_keys())
    # no `<model>`-like placeholder that the UI's markdown would take for an HTML tag
    import re
    for key in graph.get_all_asset_keys():
        assert not re.search(r"(?<!`)<[a-z_]+>(?!`)", graph.get(key).description or ""), key


def test_scorehouse_run_leaves_out_training_of_models_whose_champion_is_not_due(tmp_path):
    import duckdb

    from assets.settings import load_settings
    from ml import registry
    from orchestration.jobs import due_selection

    job = defs.resolve_job_def("scorehouse")
    settings = load_settings(tmp_path)
    assert due_selection(job, tmp_path, settings, ["churn", "clv"]) is None  # no warehouse yet: train everything
    with duckdb.connect(str(tmp_path / "warehouse.duckdb")) as con:
        registry.register(con, "churn", 1, snapshot_date=None, data_hash="h", features=["age"], params={},
                          metrics={}, artifact_path=tmp_path, alias="champion")
    keys = {k.to_user_string() for k in due_selection(job, tmp_path, settings, ["churn", "clv"])}
    assert "ml/churn_challenger" not in keys and "ml/churn_champion" not in keys
    assert {"ml/clv_challenger", "scores/churn", "scores/clv", "raw/customers"} <= keys
    # a young champion that could not score because its inputs are gone (a column renamed or no longer sent) is
    # due now, not when it is a week old; once a later run scored with it, it is not
    with duckdb.connect(str(tmp_path / "warehouse.duckdb")) as con:
        registry.record_run(con, "run-1", "churn", scoring="failed", champion_version=1,
                            scoring_note="inputs missing from today's features: age (deliver them again, or retrain)")
    assert due_selection(job, tmp_path, settings, ["churn", "clv"]) is None
    with duckdb.connect(str(tmp_path / "warehouse.duckdb")) as con:
        registry.record_run(con, "run-2", "churn", scoring="scored", champion_version=1, rows_scored=10)
    assert "ml/churn_challenger" not in {k.to_user_string() for k in due_selection(job, tmp_path, settings,
                                                                                    ["churn", "clv"])}
    settings["models"]["retrain_after_days"] = 0  # every champion is due
    assert due_selection(job, tmp_path, settings, ["churn", "clv"]) is None


def test_every_dependency_is_pinned_in_the_lock_file():
    """`make` installs requirements.lock (the versions CI tested): every dependency pyproject.toml declares is
    there, at a version its specifier allows, and every package the code imports is declared."""
    import tomllib

    from packaging.requirements import Requirement

    root = Path(__file__).parents[1]
    project = tomllib.loads((root / "pyproject.toml").read_text())["project"]
    pinned = dict(line.split(" ")[0].split("==") for line in (root / "requirements.lock").read_text().splitlines()
                  if "==" in line and not line.startswith(("#", " ")))
    pinned = {k.lower().replace("_", "-"): v for k, v in pinned.items()}
    declared = [Requirement(r) for r in [*project["dependencies"], *project["optional-dependencies"]["dev"]]]
    for req in declared:
        name = req.name.lower().replace("_", "-")
        assert name in pinned, f"{req.name} is declared but not in requirements.lock: run `make lock`"
        assert req.specifier.contains(pinned[name], prereleases=True), f"{req} vs lock {pinned[name]}: `make lock`"
    assert len({r.name.lower() for r in declared}) == len(declared), "a dependency is declared twice"
    # what the code imports (outside the standard library and itself) is declared, not just pulled in by chance
    import ast
    import sys
    from importlib.metadata import packages_distributions

    dists = packages_distributions()
    names = {r.name.lower().replace("_", "-") for r in declared}
    own = {"orchestration", "assets", "ml", "quality", "warehouse", "tests"}
    used = set()
    for folder in ("orchestration", "assets", "ml", "quality", "warehouse"):
        for path in (root / folder).rglob("*.py"):
            for node in ast.walk(ast.parse(path.read_text())):
                mods = [a.name for a in node.names] if isinstance(node, ast.Import) else \
                    [node.module] if isinstance(node, ast.ImportFrom) and node.module and not node.level else []
                used |= {m.split(".")[0] for m in mods}
    third = sorted(m for m in used if m not in own and m not in sys.stdlib_module_names)
    # the cluster executors' packages: extras of their own, outside the lock (orchestration/executors.py)
    extras = {Requirement(r).name.lower().replace("-", "_") for k in ("k8s", "celery")
              for r in project["optional-dependencies"][k]}
    undeclared = [m for m in third if m not in extras
                  and not {d.lower().replace("_", "-") for d in dists.get(m, [m])} & names]
    assert undeclared == [], f"imported but not declared in pyproject.toml: {undeclared}"


def _imports(package: str) -> dict[str, set[str]]:
    """Each module of a top-level package -> the modules it imports (anywhere in it, lazily too)."""
    import ast

    out = {}
    for path in sorted((ROOT / package).rglob("*.py")):
        names = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                names |= {a.name for a in node.names}
            elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
                names.add(node.module)
        out[str(path.relative_to(ROOT))] = names
    return out


def test_the_layers_import_only_downwards():
    """ml/, quality/ and warehouse/ never import dagster; assets/ (assets, checks, their resources and the settings
    model) never import orchestration/, which wires them into Definitions, jobs, sensors and the CLI."""
    def offenders(packages, banned):
        return {m: sorted(n for n in names if n.split(".")[0] in banned)
                for p in packages for m, names in _imports(p).items()
                if any(n.split(".")[0] in banned for n in names)}

    assert offenders(("ml", "quality", "warehouse"), {"dagster", "assets", "orchestration"}) == {}
    assert offenders(("assets",), {"orchestration"}) == {}


def test_the_code_server_tag_the_ui_stop_reads_is_still_dagsters():
    from dagster._core.storage.tags import GRPC_INFO_TAG  # private: the one place the project reads it

    from orchestration.cli import GRPC_INFO_TAG as ours

    assert ours == GRPC_INFO_TAG


def test_loading_the_definitions_imports_no_model_library():
    """Every `scorehouse` command, the UI's code server and every run worker load the definitions; most never train
    or score, so XGBoost, scikit-learn and SciPy load when a model asset first runs (assets/lazy.py)."""
    code = ("import sys; from orchestration.definitions import defs; defs.resolve_asset_graph(); "
            "print(sorted({'xgboost', 'sklearn', 'scipy', 'great_expectations'} & set(sys.modules)))")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert r.returncode == 0 and r.stdout.strip() == "[]", (r.stdout, r.stderr)


def test_model_libraries_load_openmp_with_sleeping_waits_unless_the_user_chose():
    """OpenMP reads OMP_WAIT_POLICY once, when XGBoost or scikit-learn first loads it: `ml` sets it first, in
    every process that trains or scores (the step server's preload included), and keeps a value the user set."""
    from orchestration.executors import PRELOAD

    assert PRELOAD.index("ml") < PRELOAD.index("xgboost")
    code = "import os, ml.churn, xgboost; print(os.environ['OMP_WAIT_POLICY'])"
    base = {k: v for k, v in os.environ.items() if k != "OMP_WAIT_POLICY"}
    for env, expected in ((base, "PASSIVE"), ({**base, "OMP_WAIT_POLICY": "ACTIVE"}, "ACTIVE")):
        r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, env=env, timeout=120)
        assert r.returncode == 0 and r.stdout.strip() == expected, (r.stdout, r.stderr)


ICEBERG_DEFS = '''
import dagster as dg
from orchestration.definitions import defs

keys = defs.resolve_asset_graph().get_all_asset_keys()
assert dg.AssetKey(["lake", "published"]) in keys and dg.AssetKey(["serving", "published"]) not in keys
sensor = defs.get_sensor_def("lake_after_scoring")
assert all("job lake follows (sensor lake_after_scoring)" in defs.resolve_job_def(j).description
           for j in ("scorehouse", "score"))

@dg.asset(key=["features", "population"])
def population():
    return dg.MaterializeResult(metadata={"snapshot_date": "2026-06-30"})

with dg.instance_for_test() as instance:
    for materialized, trigger in ((False, "ui"), (True, "cli"), (True, "ui")):
        result = dg.materialize([population] if materialized else [dg.asset(name="other")(lambda: None)],
                                instance=instance, tags={"scorehouse/trigger": trigger})
        context = dg.build_run_status_sensor_context(
            sensor_name=sensor.name, dagster_event=result.get_run_success_event(), dagster_instance=instance,
            dagster_run=instance.get_run_by_id(result.run_id), repository_def=defs.get_repository_def())
        out = sensor(context)
        ok = isinstance(out, dg.RunRequest)
        print(type(out).__name__, out.partition_key if ok else None, sensor.job_name if ok else None,
              ok and out.run_key.startswith("lake-after-"))
'''


def test_on_the_iceberg_backend_bi_is_published_from_the_lake_which_follows_each_scoring_run(tmp_path):
    """The iceberg backend's definitions have no embedded serving/published (the DuckDB file scores a sample: BI
    must never read it), and sensor lake_after_scoring asks for job lake, for the snapshot date the newest
    features are as of, after each run of the pipeline or the daily scoring (not after `scorehouse run`'s, which
    runs job lake itself)."""
    (tmp_path / "scorehouse.yaml").write_text(f"warehouse:\n  backend: iceberg\n  lake: {{location: {tmp_path}}}\n")
    r = subprocess.run([sys.executable, "-c", ICEBERG_DEFS], capture_output=True, text=True, cwd=ROOT, timeout=120,
                       env=clean_env(SCOREHOUSE_HOME=str(tmp_path)))
    assert r.returncode == 0, r.stderr[-3000:]
    assert r.stdout.split("\n")[-4:] == ["SkipReason None None False", "SkipReason None None False",
                                         "RunRequest 2026-06-30 lake True", ""], r.stdout
