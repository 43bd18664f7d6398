"""Small disks for fault injection: a tmpfs mounted for one test, full after a few hundred KiB or
read-only, then unmounted. Mounting needs root (CAP_SYS_ADMIN); elsewhere the tests skip, and
fail where SALIENCY_FLOW_REQUIRE_MOUNT=1 (CI sets it)."""

from __future__ import annotations

import contextlib
import subprocess
from pathlib import Path
from typing import Iterator

from tests.conftest import unavailable

REQUIRE_MOUNT_ENV = "SALIENCY_FLOW_REQUIRE_MOUNT"


def _mount(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(["mount", *args], capture_output=True, text=True, timeout=30)


@contextlib.contextmanager
def small_disk(path: Path, size_kib: int) -> Iterator[Path]:
    """A tmpfs of `size_kib` KiB at `path` (created), unmounted afterwards."""
    path.mkdir(parents=True, exist_ok=True)
    try:
        mounted = _mount("-t", "tmpfs", "-o", f"size={size_kib}k", "tmpfs", str(path))
    except FileNotFoundError:
        unavailable("no `mount` command here", REQUIRE_MOUNT_ENV)
    if mounted.returncode != 0:
        unavailable(f"cannot mount a tmpfs ({mounted.stderr.strip()}); needs root",
                    REQUIRE_MOUNT_ENV)
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], capture_output=True, timeout=30)


def make_read_only(path: Path) -> None:
    """Remount a `small_disk` read-only."""
    remounted = _mount("-o", "remount,ro", str(path))
    assert remounted.returncode == 0, remounted.stderr
