"""ml.io's atomic writes (issue 18): files come out readable by others, as `open()` would make
them (0666 minus the umask), never mkstemp's 0600."""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest

from ml.io import atomic_path, current_umask, write_bytes, write_json, write_text


@pytest.fixture
def umask() -> Iterator[None]:
    previous = os.umask(0o022)
    os.umask(previous)
    yield
    os.umask(previous)


@pytest.mark.parametrize(("mask", "mode"), [(0o022, 0o644), (0o002, 0o664), (0o077, 0o600)])
def test_atomic_writes_honour_the_umask(tmp_path: Path, umask: None, mask: int, mode: int) -> None:
    os.umask(mask)
    assert current_umask() == mask
    write_text(tmp_path / "a.txt", "x")
    write_bytes(tmp_path / "b.bin", b"x")
    write_json(tmp_path / "c.json", {"a": 1})
    with atomic_path(tmp_path / "d.npz") as tmp:
        tmp.write_bytes(b"x")
    for name in ("a.txt", "b.bin", "c.json", "d.npz"):
        assert stat.S_IMODE((tmp_path / name).stat().st_mode) == mode, name
    # the plain open() the mode must match
    (tmp_path / "plain").write_text("x")
    assert stat.S_IMODE((tmp_path / "plain").stat().st_mode) == mode


def test_a_failed_write_leaves_the_previous_file(tmp_path: Path) -> None:
    write_text(tmp_path / "a.txt", "old")
    with pytest.raises(RuntimeError):
        with atomic_path(tmp_path / "a.txt") as tmp:
            tmp.write_text("half")
            raise RuntimeError("interrupted")
    assert (tmp_path / "a.txt").read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["a.txt"]


def test_a_secret_is_never_readable_by_others(tmp_path: Path, umask: None) -> None:
    """`mode` (the cluster's private keys pass 0o600) wins over a permissive umask, and the
    temporary file holding the bytes before the rename is private from its creation."""
    os.umask(0o002)
    with atomic_path(tmp_path / "ca.key", mode=0o600) as tmp:
        assert stat.S_IMODE(tmp.stat().st_mode) == 0o600
        tmp.write_bytes(b"secret")
    write_bytes(tmp_path / "sa.key", b"secret", mode=0o600)
    for name in ("ca.key", "sa.key"):
        assert stat.S_IMODE((tmp_path / name).stat().st_mode) == 0o600, name
    # an explicit mode is the mode, whatever the umask would take away
    os.umask(0o077)
    write_bytes(tmp_path / "shared.crt", b"public", mode=0o644)
    assert stat.S_IMODE((tmp_path / "shared.crt").stat().st_mode) == 0o644
