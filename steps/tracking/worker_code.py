"""On a Dask worker, before any partition: which version of this project's code it imports, and
installing the project's wheel where that is not the step's.

This module is sent to the workers by value (`cloudpickle.register_pickle_by_value`), so a
worker needs nothing of this project to run it; it imports nothing of the project at module
level.

The wheel (`steps/core/wheel.py`) is installed with pip (`--no-deps --no-index`: the worker's
environment already holds the requirements, and no package index is needed) into a directory
of its own per code version in the worker's local directory, never into the worker's
environment. That directory goes first on `sys.path` and every `steps` module the worker had
imported is forgotten, so the next partition imports the whole package anew: no module of an
earlier version survives (`Client.upload_file` reloaded only the top-level module).
"""

from __future__ import annotations

import asyncio
import importlib
import pickle
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from distributed import WorkerPlugin

#: Each installed code version's directory in a worker's local directory starts with this.
INSTALL_PREFIX = "saliency-flow-"
PACKAGE = "steps"
SHIPPED_VERSION_FILE = "SHIPPED_CODE_VERSION"
PIP_TIMEOUT_SECONDS = 300


def imported_version() -> str:
    """The code version of the `steps` package this worker imports; `none` without one, or
    `older` for a version from before code versions were reported."""
    try:
        from steps.core.code_version import running_code_version
    except ImportError as error:
        return "none" if getattr(error, "name", "") == PACKAGE else "older"
    return running_code_version()


def partition_runner():
    """The function a partition's Dask task calls: `function(*args, **kwargs)` pickled into
    its one argument by the step. The scheduler keeps the bytes without unpickling them, so
    it needs none of this project's code and never holds the tracking settings as objects.
    Made here rather than importable, so that Dask pickles it by value (plain pickle refuses a
    local function; Dask then uses cloudpickle), and a scheduler without this project unpickles
    it."""

    def run_pickled(payload: bytes):
        function, args, kwargs = pickle.loads(payload)
        return function(*args, **kwargs)

    return run_pickled


def _installed_version(target: Path) -> str | None:
    stamp = target / PACKAGE / SHIPPED_VERSION_FILE
    return stamp.read_text(encoding="utf-8").strip() if stamp.is_file() else None


def _install(wheel_name: str, wheel: bytes, version: str, target: Path) -> None:
    """pip-install the wheel into `target` (through a temporary directory beside it, renamed
    once whole, so a worker killed half-way leaves no half-installed version)."""
    if _installed_version(target) == version:
        return
    with tempfile.TemporaryDirectory(dir=target.parent, prefix=".install-") as scratch:
        path = Path(scratch, wheel_name)
        path.write_bytes(wheel)
        staged = Path(scratch, "site")
        out = subprocess.run(
            [sys.executable, "-m", "pip", "install", "--no-deps", "--no-index",
             "--disable-pip-version-check", "--no-warn-script-location", "--quiet",
             "--target", str(staged), str(path)],
            capture_output=True, text=True, timeout=PIP_TIMEOUT_SECONDS)
        if out.returncode != 0:
            lines = (out.stderr or out.stdout).strip().splitlines()
            raise RuntimeError(f"pip could not install {wheel_name}: "
                               f"{lines[-1] if lines else f'exit code {out.returncode}'}")
        if _installed_version(target) != version:  # else another worker of this directory won
            shutil.rmtree(target, ignore_errors=True)
            staged.rename(target)


def _use(target: Path) -> None:
    """Import `steps` from `target` from now on: first on `sys.path`, every other installed
    version off it, and every `steps` module imported so far forgotten."""
    sys.path[:] = [entry for entry in sys.path if not Path(entry).name.startswith(INSTALL_PREFIX)]
    sys.path.insert(0, str(target))
    for name in [name for name in sys.modules
                 if name == PACKAGE or name.startswith(f"{PACKAGE}.")]:
        del sys.modules[name]
    importlib.invalidate_caches()


class InstallProject(WorkerPlugin):
    """Installs the project's wheel on each worker (and on any worker that joins while it is
    registered) and makes the worker import it. The step unregisters it when it ends; the
    installed code stays in the worker's local directory for the next step of the same
    version."""

    def __init__(self, wheel_name: str, wheel: bytes, version: str) -> None:
        self.wheel_name, self.wheel, self.version = wheel_name, wheel, version

    async def setup(self, worker) -> None:
        target = Path(worker.local_directory) / (INSTALL_PREFIX + self.version.replace(":", "-"))
        # pip takes a second or two: off the worker's event loop, which keeps its heartbeats.
        await asyncio.to_thread(_install, self.wheel_name, self.wheel, self.version, target)
        _use(target)
