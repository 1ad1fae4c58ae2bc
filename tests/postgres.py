"""A PostgreSQL server of the test's own: `initdb` in a temporary folder, 127.0.0.1 on a free port, stopped at
the end. The iceberg backend's catalog lives in it. `make test` installs Debian's postgresql where it is missing."""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from glob import glob
from pathlib import Path

from tests.receivers import free_port


def bindir() -> Path | None:
    found = sorted(glob("/usr/lib/postgresql/*/bin/initdb"), key=lambda p: int(p.split("/")[4]))
    if found:
        return Path(found[-1]).parent
    initdb = shutil.which("initdb")
    return Path(initdb).parent if initdb else None


def _run(cmd: list) -> None:
    done = subprocess.run(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    if done.returncode:
        raise RuntimeError(f"{Path(cmd[-1] if cmd[0] == 'runuser' else cmd[0]).name} failed: {done.stderr.strip()}")


@contextmanager
def local_postgres() -> Iterator[str]:
    """Yields the server's URL (postgresql://scorehouse@127.0.0.1:PORT/postgres)."""
    bin_ = bindir()
    if bin_ is None:
        raise RuntimeError("PostgreSQL is not installed: `make test` installs it (apt-get install postgresql)")
    # Its own folder in /tmp (pytest's are private to the user running it): PostgreSQL refuses to run as root,
    # and there the server runs as the postgres user Debian's package creates, which must reach the folder.
    root = Path(tempfile.mkdtemp(prefix="scorehouse-postgres-"))
    as_user = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
    if as_user:
        shutil.chown(root, "postgres")
    data, port = root / "data", free_port()
    ctl = [*as_user, str(bin_ / "pg_ctl"), "-D", str(data)]
    try:
        _run([*as_user, str(bin_ / "initdb"), "-D", str(data), "-U", "scorehouse", "--auth=trust", "-E", "UTF8"])
        _run([*ctl, "-o", f"-h 127.0.0.1 -p {port} -k {root} -F", "-l", str(root / "server.log"), "-w", "start"])
        try:
            yield f"postgresql://scorehouse@127.0.0.1:{port}/postgres"
        finally:
            _run([*ctl, "-m", "fast", "-w", "stop"])
    finally:
        shutil.rmtree(root, ignore_errors=True)
