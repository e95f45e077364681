"""Fakes shared by the rehearsal tests: a scripted Prometheus and metric/template builders.

(A uniquely named module rather than conftest.py, which tests/conftest.py already is.)
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Mapping, Sequence, Union

from scripts.rehearsal.analysis import FakeClock
from scripts.rehearsal.prometheus import PrometheusQuery, ProviderError

Answer = Union[Mapping[str, Any], ProviderError]


@dataclass
class ScriptedPrometheus:
    """Answers queries from a script (cycling on the last entry) and records when each came.

    `latency` advances the fake clock during a query, so "interval counts from the previous
    measurement's finish" is observable. `by_query` answers per PromQL text when several metrics
    share one fake.
    """

    clock: FakeClock
    script: Sequence[Answer] = ()
    latency: float = 0.0
    by_query: dict[str, Sequence[Answer]] = field(default_factory=dict)
    calls: list[tuple[float, str]] = field(default_factory=list)
    _positions: dict[str, int] = field(default_factory=dict)

    def __call__(self, request: PrometheusQuery) -> Mapping[str, Any]:
        self.calls.append((self.clock.now(), request.query))
        script = self.by_query.get(request.query, self.script)
        position = self._positions.get(request.query, 0)
        answer = script[min(position, len(script) - 1)]
        self._positions[request.query] = position + 1
        self.clock.advance(self.latency)
        if isinstance(answer, ProviderError):
            raise answer
        return answer

    def times(self, query: str | None = None) -> list[float]:
        return [t for t, q in self.calls if query is None or q == query]


def metric(name: str = "success-rate", query: str = "q", **fields: Any) -> dict[str, Any]:
    """A Prometheus metric as it appears in an AnalysisTemplate."""
    body: dict[str, Any] = {
        "name": name,
        "provider": {"prometheus": {"address": "http://prometheus:9090", "query": query}},
    }
    body.update(fields)
    return body


def template(*metrics: dict[str, Any], name: str = "t", **spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": "argoproj.io/v1alpha1",
        "kind": "AnalysisTemplate",
        "metadata": {"name": name},
        "spec": {"metrics": list(metrics), **spec},
    }
