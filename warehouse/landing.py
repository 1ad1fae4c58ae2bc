"""Which landing files may be read now: inside the landing folder, not temporary, settled or marked ready.

A bank's export job writes into the landing folder while the pipeline may be looking at it. A file is read
only when it is settled — its size and modification time unchanged for `settle_seconds` — or, when the source
config names a ready marker, when the marker is there and at least as new as the file (`{name}.done` beside
each file, or one `_SUCCESS` for the folder). Names that copy tools and editors use for files in flight
(`*.tmp`, `*.part`, `*.crdownload`, `~$*`, hidden files) are never read, nor are the markers themselves. Globs
are confined to the landing folder when the config loads (warehouse/sources.py); a symlink whose target lies
outside it is refused here.
"""

from __future__ import annotations

import fnmatch
import time
from dataclasses import dataclass
from pathlib import Path

IN_FLIGHT = ("*.tmp", "*.part", "*.crdownload", "~$*", ".*", "*.partial", "*.filepart", "*.swp")
FOLDER_MARKER = "_SUCCESS"


@dataclass(frozen=True)
class LandingFile:
    path: Path
    rel: str  # relative to the landing folder, POSIX separators: how the ledger names it
    size: int
    mtime_ns: int
    inode: int

    @classmethod
    def at(cls, landing: Path, path: Path) -> LandingFile:
        st = path.stat()
        return cls(path, path.relative_to(landing).as_posix(), st.st_size, st.st_mtime_ns, st.st_ino)

    def unchanged(self) -> bool:
        """Still the same file as when it was found (checked after reading it)."""
        try:
            st = self.path.stat()
        except FileNotFoundError:
            return False
        return (st.st_size, st.st_mtime_ns, st.st_ino) == (self.size, self.mtime_ns, self.inode)


@dataclass(frozen=True)
class Waiting:
    rel: str
    why: str  # e.g. "modified 3 s ago (settle_seconds 10)"


class OutsideLanding(ValueError):
    """A landing entry that resolves outside the landing folder (a symlink out of it)."""


def _marker_names(ready_marker: str | None) -> list[str]:
    if not ready_marker:
        return [FOLDER_MARKER]
    return [ready_marker.replace("{name}", "*"), FOLDER_MARKER]


def is_in_flight(name: str, ready_marker: str | None = None) -> bool:
    """Names never read as data: temporary copies, editor locks, hidden files and ready markers."""
    return any(fnmatch.fnmatchcase(name, p) for p in (*IN_FLIGHT, *_marker_names(ready_marker)))


OUTSIDE = "is a link to a file outside the landing folder: not read (copy the file into the landing folder)"


def confined(landing: Path, path: Path) -> Path:
    """`path` resolved; OutsideLanding when it (a symlink, or a link on the way) leads out of `landing`."""
    root = landing.resolve()
    real = path.resolve()
    if real != root and root not in real.parents:
        raise OutsideLanding(f"{path.relative_to(landing).as_posix()} {OUTSIDE}")
    return real


def matches(landing: Path, glob: str, ready_marker: str | None = None) -> tuple[list[Path], list[Path]]:
    """The files `glob` matches in `landing` (sorted), and the links among them that leave it (refused)."""
    found, outside = [], []
    for p in sorted(landing.glob(glob)):
        if is_in_flight(p.name, ready_marker):
            continue
        try:
            real = confined(landing, p)
        except OutsideLanding:
            outside.append(p)
            continue
        if real.is_file():
            found.append(p)
    return found, outside


def readiness(landing: Path, path: Path, settle_seconds: float, ready_marker: str | None,
              now: float | None = None) -> str | None:
    """None when `path` may be read now, else why it waits (in a user's words)."""
    st = path.stat()
    if ready_marker:
        marker = landing / FOLDER_MARKER if ready_marker == FOLDER_MARKER else \
            path.with_name(ready_marker.replace("{name}", path.name))
        if not marker.exists():
            return f"waiting for its ready marker {marker.relative_to(landing).as_posix()}"
        if marker.stat().st_mtime_ns < st.st_mtime_ns:
            return f"changed after its ready marker {marker.relative_to(landing).as_posix()} was written"
        return None
    age = (time.time() if now is None else now) - st.st_mtime_ns / 1e9
    if age < settle_seconds:
        return f"modified {max(age, 0):.0f} s ago, still being written? (settle_seconds {settle_seconds:g})"
    return None
