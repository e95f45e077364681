"""Where the live sample comes from: every serving pod's `/monitoring/sample`, or a local file.

In Kubernetes the job resolves the headless Service's DNS name to every ready pod (no API
access, no RBAC), asks each for its reservoir, and merges the windows in proportion to the
traffic they saw, so a busy pod is not under-represented by its fixed-size reservoir.
"""

from __future__ import annotations

import socket
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import numpy.typing as npt

Floats = npt.NDArray[np.float32]
Labels = npt.NDArray[np.int64]


class LiveSampleError(RuntimeError):
    """No usable live sample: the message names the pod or file and the reason."""


@dataclass(frozen=True)
class LiveSample:
    rows: Floats
    labels: Labels | None
    seen: int  # rows the sampled windows answered in total (the sample represents these)
    sources: tuple[str, ...]
    model_versions: tuple[str, ...] = ()
    windows: tuple[dict[str, Any], ...] = field(default=())

    def describe(self) -> dict[str, Any]:
        return {
            "rows": int(self.rows.shape[0]),
            "seen": self.seen,
            "sources": list(self.sources),
            "model_versions": list(self.model_versions),
            "windows": list(self.windows),
        }


def resolve_pods(host: str, port: int) -> list[str]:
    """Base URLs of every address a (headless Service) DNS name resolves to, sorted."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except socket.gaierror as exc:
        raise LiveSampleError(f"cannot resolve {host}: {exc}") from exc
    addresses = sorted({str(info[4][0]) for info in infos})
    return [f"http://[{a}]:{port}" if ":" in a else f"http://{a}:{port}" for a in addresses]


def fetch_snapshots(
    urls: list[str], token: str, client: httpx.Client
) -> tuple[list[dict[str, Any]], list[str]]:
    """GET every pod's sample; a pod that fails is reported, not fatal (it may be terminating)."""
    snapshots, failures = [], []
    for url in urls:
        try:
            response = client.get(
                f"{url.rstrip('/')}/monitoring/sample",
                headers={"authorization": f"Bearer {token}"},
            )
            response.raise_for_status()
            document = response.json()
            if not isinstance(document, dict) or not isinstance(document.get("windows"), list):
                raise ValueError("not a sample document")
        except (httpx.HTTPError, ValueError) as exc:
            failures.append(f"{url}: {exc}")
            continue
        document["source"] = url
        snapshots.append(document)
    if not snapshots:
        raise LiveSampleError("no pod returned a sample: " + "; ".join(failures or ["no pods"]))
    return snapshots, failures


def merge_snapshots(
    snapshots: list[dict[str, Any]], max_rows: int, rng: np.random.Generator
) -> LiveSample:
    """One uniform sample of all windows of all pods, each contributing in proportion to `seen`.

    Window w kept k_w of its s_w rows. Taking m * s_w / S rows from each (S = sum of s_w) is a
    proportional stratified sample; m is the largest size no window runs short for.
    """
    windows: list[tuple[Floats, Labels, int]] = []
    described: list[dict[str, Any]] = []
    features = None
    for snapshot in snapshots:
        for window in snapshot["windows"]:
            rows = np.asarray(window["rows"], dtype=np.float32)
            labels = np.asarray(window["labels"], dtype=np.int64)
            seen = int(window["seen"])
            if rows.shape[0] == 0 or seen == 0:
                continue
            if rows.ndim != 2 or labels.shape != (rows.shape[0],):
                raise LiveSampleError(f"{snapshot.get('source')}: malformed window")
            if features is not None and rows.shape[1] != features:
                raise LiveSampleError(
                    f"{snapshot.get('source')}: {rows.shape[1]} features, other pods {features}"
                )
            features = rows.shape[1]
            windows.append((rows, labels, seen))
            described.append(
                {
                    "source": snapshot.get("source", ""),
                    "seen": seen,
                    "kept": int(rows.shape[0]),
                    "start_unix": window.get("start_unix"),
                    "end_unix": window.get("end_unix"),
                }
            )
    sources = tuple(str(s.get("source", "")) for s in snapshots)
    versions = tuple(sorted({str(s.get("model_version", "")) for s in snapshots}))
    if not windows:
        return LiveSample(
            np.empty((0, features or 0), dtype=np.float32),
            np.empty(0, dtype=np.int64),
            0,
            sources,
            versions,
        )
    total_seen = sum(seen for _, _, seen in windows)
    size = min(
        max_rows,
        min(int(rows.shape[0] * total_seen / seen) for rows, _, seen in windows),
    )
    quotas = _largest_remainder([seen for _, _, seen in windows], size)
    parts_x, parts_y = [], []
    for (rows, labels, _), quota in zip(windows, quotas):
        pick = rng.choice(rows.shape[0], size=min(quota, rows.shape[0]), replace=False)
        parts_x.append(rows[pick])
        parts_y.append(labels[pick])
    return LiveSample(
        np.concatenate(parts_x),
        np.concatenate(parts_y),
        total_seen,
        sources,
        versions,
        tuple(described),
    )


def _largest_remainder(weights: list[int], total: int) -> list[int]:
    """Integer shares of `total` proportional to `weights`, summing to exactly `total`."""
    whole = sum(weights)
    exact = [w * total / whole for w in weights]
    quotas = [int(e) for e in exact]
    order = sorted(range(len(weights)), key=lambda i: exact[i] - quotas[i], reverse=True)
    for i in order[: total - sum(quotas)]:
        quotas[i] += 1
    return quotas


def load_sample_file(path: Path) -> LiveSample:
    """A local sample (`make drift`): an .npz with `X` [n, F] and optionally `labels` [n]."""
    try:
        with np.load(path, allow_pickle=False) as archive:
            rows = np.asarray(archive["X"], dtype=np.float32)
            labels = np.asarray(archive["labels"], dtype=np.int64) if "labels" in archive else None
    except FileNotFoundError:
        raise LiveSampleError(f"{path}: no such sample file") from None
    except (OSError, ValueError, KeyError) as exc:
        raise LiveSampleError(f"{path}: unreadable sample (.npz with X[, labels]): {exc}") from None
    return LiveSample(rows, labels, int(rows.shape[0]), (str(path),))
