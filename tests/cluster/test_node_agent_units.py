"""Node agent rules that need no cluster: $(VAR) expansion and the address pool."""

from __future__ import annotations

import pytest

from scripts.cluster.node_agent import AddressPool, PodError, _expand


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
