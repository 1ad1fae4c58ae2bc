"""`scorehouse run`'s runs belong to the code location `scorehouse`, like the runs the UI, schedules and sensors
launch: the Overview timeline and the job pages list runs by that origin, and `execute_in_process` gives none.

So the CLI creates the run itself, with the origin of the location as the webserver reads it from the same
workspace file (orchestration/home.py), and executes it in this process the way a run worker does.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import dagster as dg

from orchestration.home import LOCATION


def job_named(name: str) -> dg.JobDefinition:
    """A job of the definitions, by name: how the reconstructable job below is rebuilt."""
    from orchestration.definitions import defs

    return defs.resolve_job_def(name)


def create_run(instance: dg.DagsterInstance, workspace: Path, job_name: str, *, tags: Mapping[str, str],
               run_config: Mapping, asset_selection: Sequence[dg.AssetKey] | None):
    """A NOT_STARTED run of the job, with the location's origin, the job's own tags and `tags`."""
    # Dagster has no public API for a run's code-location origin; these are what the webserver and the daemon
    # use to load a workspace file and to give the runs they launch their origin.
    from dagster._core.remote_origin import RemoteJobOrigin, RemoteRepositoryOrigin
    from dagster._core.workspace.load import location_origins_from_yaml_paths

    from orchestration.definitions import defs

    (location,) = [o for o in location_origins_from_yaml_paths([str(workspace)]) if o.location_name == LOCATION]
    origin = RemoteJobOrigin(RemoteRepositoryOrigin(location, defs.get_repository_def().name), job_name)
    recon = dg.build_reconstructable_job(__name__, "job_named", (job_name,))
    job = recon.get_definition()
    run = instance.create_run_for_job(
        job, run_config=run_config, tags={**job.run_tags, **tags},
        asset_selection=frozenset(asset_selection) if asset_selection else None,
        remote_job_origin=origin, job_code_origin=recon.get_python_origin())
    return recon, run


def execute(recon, run, instance: dg.DagsterInstance):
    """Execute a created run in this process; the result has the run's events (checks, failures)."""
    from dagster._core.execution.api import execute_run  # what `dagster api execute_run` (a run worker) calls

    return execute_run(recon, run, instance, raise_on_error=False)
