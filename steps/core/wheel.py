"""The project's code as a wheel, built from the checkout in memory, for a Dask cluster's
workers (`steps/tracking/worker_code.py` installs it).

A wheel of pure Python is a zip of the package and a `.dist-info` folder (PEP 427); it is
written here rather than by a build backend: no `pyproject.toml` to keep, no build isolation
fetching setuptools from an index a cluster may not reach, and the same bytes for the same
code. Its version carries the code version (`code_version.package_version`), and the package
holds the code version itself (`SHIPPED_CODE_VERSION`), which a worker reports back.
"""

from __future__ import annotations

import base64
import hashlib
import io
import zipfile
from pathlib import Path

from steps.core.code_version import PROJECT_DIR, SHIPPED_VERSION_FILE, package_version

DISTRIBUTION = "saliency_flow"
PACKAGE = "steps"
#: A fixed time for every entry: the same code gives the same bytes.
ENTRY_TIME = (2020, 1, 1, 0, 0, 0)


def wheel_name(version: str) -> str:
    return f"{DISTRIBUTION}-{package_version(version)}-py3-none-any.whl"


def _record_line(name: str, data: bytes) -> str:
    digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
    return f"{name},sha256={digest},{len(data)}"


def build_wheel(version: str, project_dir: Path = PROJECT_DIR) -> bytes:
    """The wheel of `project_dir`'s `steps` package, stamped with code version `version`."""
    package = project_dir / PACKAGE
    files = {path.relative_to(project_dir).as_posix(): path.read_bytes()
             for path in sorted(package.rglob("*"))
             if path.is_file() and "__pycache__" not in path.parts and path.suffix != ".pyc"}
    files[f"{PACKAGE}/{SHIPPED_VERSION_FILE}"] = f"{version}\n".encode()
    info = f"{DISTRIBUTION}-{package_version(version)}.dist-info"
    files[f"{info}/METADATA"] = (
        "Metadata-Version: 2.1\n"
        f"Name: {DISTRIBUTION.replace('_', '-')}\n"
        f"Version: {package_version(version)}\n"
        "Summary: saliency-flow's steps, shipped to Dask workers\n").encode()
    files[f"{info}/WHEEL"] = ("Wheel-Version: 1.0\nGenerator: saliency-flow\n"
                              "Root-Is-Purelib: true\nTag: py3-none-any\n").encode()
    files[f"{info}/top_level.txt"] = f"{PACKAGE}\n".encode()
    record = [_record_line(name, data) for name, data in files.items()] + [f"{info}/RECORD,,"]
    files[f"{info}/RECORD"] = ("\n".join(record) + "\n").encode()
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, data in files.items():
            entry = zipfile.ZipInfo(name, ENTRY_TIME)
            entry.external_attr = 0o644 << 16
            entry.compress_type = zipfile.ZIP_DEFLATED
            archive.writestr(entry, data)
    return buffer.getvalue()
