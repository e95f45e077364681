"""Node agent rules that need no cluster: $(VAR) expansion, the address pool, token retries."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import pytest
from kubernetes.client.exceptions import ApiException

from scripts.cluster.node_agent import Agent, AddressPool, PodError, _expand


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("$(A)/x", "1/x"),
        ("$(MISSING)", "$(MISSING)"),
        ("$$(A)", "$(A)"),
        ("a$(A)b$(B)", "a1b2"),
        ("$(A", "$(A"),
    ],
)
def test_variables_expand_as_kubernetes_does(text: str, expected: str) -> None:
    assert _expand(text, {"A": "1", "B": "2"}) == expected


def test_the_pool_keeps_the_node_and_platform_addresses() -> None:
    pool = AddressPool("198.18.0.0/27")  # 30 hosts: node, 13 pods, 16 platform
    assert pool.node_ip == "198.18.0.1"
    taken = [pool.take() for _ in range(13)]
    assert taken[0] == "198.18.0.2" and taken[-1] == "198.18.0.14"
    with pytest.raises(PodError, match="no free address"):
        pool.take()
    pool.give_back(taken[3])
    assert pool.take() == taken[3]


class _TokenApi:
    """TokenRequest that the Node authorizer refuses `refusals` times before it knows the pod."""

    def __init__(self, refusals: int, status: int = 403) -> None:
        self.refusals, self.status, self.calls = refusals, status, 0

    def create_namespaced_service_account_token(self, name: str, namespace: str, body: Any) -> Any:
        self.calls += 1
        if self.calls <= self.refusals:
            raise ApiException(status=self.status, reason="Forbidden")
        assert body["spec"]["boundObjectRef"]["uid"] == "u1"
        return SimpleNamespace(status=SimpleNamespace(token=f"token-for-{namespace}/{name}"))


POD = {"metadata": {"name": "p", "namespace": "ns", "uid": "u1"}, "spec": {}}


def test_a_token_refused_while_the_authorizer_catches_up_is_retried() -> None:
    api = _TokenApi(refusals=2)
    agent: Any = SimpleNamespace(core=api)
    assert Agent.token_for(agent, POD, {"path": "token"}) == "token-for-ns/default"
    assert api.calls == 3


def test_other_token_errors_are_not_retried() -> None:
    api = _TokenApi(refusals=1, status=404)
    with pytest.raises(ApiException):
        agent: Any = SimpleNamespace(core=api)
        Agent.token_for(agent, POD, {"path": "token"})
    assert api.calls == 1
