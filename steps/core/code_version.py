"""The code version a step ran: git commit plus a hash of the project's own files.

The commit alone misses uncommitted edits and says nothing outside git; the content hash of
`MLproject`, `conda.yaml`, `main.py` and `steps/` covers both. Every step run carries it as a
tag, and the driver only reuses a stored run whose tag equals the current one.
"""

from __future__ import annotations

import hashlib
import subprocess
from pathlib import Path

PROJECT_DIR = Path(__file__).resolve().parents[2]
HASHED = ("MLproject", "conda.yaml", "main.py", "steps")


def _project_files(project_dir: Path) -> list[Path]:
    files = []
    for name in HASHED:
        path = project_dir / name
        if path.is_dir():
            files += [p for p in path.rglob("*")
                      if p.is_file() and "__pycache__" not in p.parts and p.suffix != ".pyc"]
        elif path.is_file():
            files.append(path)
    return sorted(files)


def content_hash(project_dir: Path = PROJECT_DIR) -> str:
    """SHA-256 over the relative path and bytes of every hashed file."""
    digest = hashlib.sha256()
    for path in _project_files(project_dir):
        digest.update(path.relative_to(project_dir).as_posix().encode() + b"\0")
        digest.update(path.read_bytes() + b"\0")
    return digest.hexdigest()


def git_commit(project_dir: Path = PROJECT_DIR) -> str | None:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=project_dir, capture_output=True,
                             text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return out.stdout.strip() if out.returncode == 0 else None


def code_version(project_dir: Path = PROJECT_DIR) -> str:
    """`<commit>:<content hash>`, with `nogit` for a project outside git."""
    return f"{git_commit(project_dir) or 'nogit'}:{content_hash(project_dir)[:16]}"


#: Written into the project's wheel only (`steps/core/wheel.py`): the code version of the
#: checkout it was built from, which an installed copy cannot hash (it has no `MLproject`).
SHIPPED_VERSION_FILE = "SHIPPED_CODE_VERSION"


def running_code_version() -> str:
    """The code version of the `steps` package this process imported: the one stamped in it
    when it came from the project's wheel, else that of the checkout it lies in."""
    stamp = Path(__file__).resolve().parents[1] / SHIPPED_VERSION_FILE
    if stamp.is_file():
        return stamp.read_text(encoding="utf-8").strip()
    return code_version()


def package_version(version: str) -> str:
    """The wheel's PEP 440 version for a code version `<commit>:<hash>`: `0+<commit 12>.<hash>`
    (a local version label: letters, digits and dots only)."""
    commit, _, digest = version.partition(":")
    return f"0+{commit[:12]}.{digest}"
