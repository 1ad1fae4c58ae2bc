"""The `scorehouse` command as a user starts it, and the environment the tests start it in."""

import os
import sys
from pathlib import Path

SCOREHOUSE = str(Path(sys.executable).parent / "scorehouse")


def clean_env(**extra: str) -> dict:
    """This process's environment without Scorehouse's or Dagster's variables (a developer's shell or an earlier
    test may have set them), with `extra` on top."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SCOREHOUSE_", "DAGSTER_"))}
    return {**env, **extra}
