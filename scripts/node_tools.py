"""Pinned Node tools under tools/<name>/ (package.json + package-lock.json): install on demand.

The bootstrap installs them the same way (one stamp file per folder holds the lock's digest), so a
test that needs one (gitlab-ci-local in tests/ci) works in a fresh clone and costs nothing after.
"""

from __future__ import annotations

import hashlib
import shutil
import subprocess
from pathlib import Path


def ensure_node_modules(tool_dir: Path) -> None:
    """`npm ci` when node_modules is missing or older than the lock file (idempotent)."""
    lock_hash = hashlib.sha256((tool_dir / "package-lock.json").read_bytes()).hexdigest()
    stamp = tool_dir / "node_modules" / ".lock-sha256"
    if stamp.is_file() and stamp.read_text().strip() == lock_hash:
        return
    npm = shutil.which("npm")
    if npm is None:
        raise RuntimeError(f"npm is required for {tool_dir} (Node 20+ with npm)")
    subprocess.run(
        [npm, "ci", "--no-audit", "--no-fund", "--loglevel=error"],
        cwd=tool_dir,
        check=True,
        stdout=subprocess.DEVNULL,
    )
    stamp.write_text(lock_hash + "\n")
