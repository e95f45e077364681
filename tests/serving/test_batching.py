"""Merged inference (ml/serving/batching.py): one onnxruntime call per loop turn, no mix-ups."""

from __future__ import annotations

import asyncio
import logging
import socket
import threading
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pytest

from ml.serving.app import ModelService
from ml.serving.batching import Deferred, MicroBatcher
from ml.serving.config import ServingConfig
from ml.serving.model import LoadedModel

from .conftest import digits_rows, metric_value, threaded_server
from .test_http import read_responses


@dataclass
class Item:
    model: object
    rows: np.ndarray


def rows(n: int) -> np.ndarray:
    return np.zeros((n, 4), dtype=np.float32)


class Recorder:
    """compute + deliver for MicroBatcher: remembers each group's row counts and its thread."""

    def __init__(self, fail_first: bool = False, barrier: threading.Barrier | None = None) -> None:
        self.groups: list[list[int]] = []
        self.threads: list[str] = []
        self.outcomes: list[object] = []
        self.fail_first = fail_first
        self.barrier = barrier  # every compute waits for the barrier's other parties
        self.gate = threading.Event()  # compute waits for it to open (open unless a test closes it)
        self.gate.set()

    def compute(self, items: list[Item]) -> list[int]:
        self.threads.append(threading.current_thread().name)
        if self.barrier is not None:
            self.barrier.wait(timeout=10)
        self.gate.wait(timeout=10)
        if self.fail_first and not self.outcomes:
            raise RuntimeError("onnxruntime failure")
        return [item.rows.shape[0] for item in items]

    def deliver(self, items: list[Item], outcome: list[int] | Exception) -> None:
        self.outcomes.append(outcome)
        self.groups.append([item.rows.shape[0] for item in items])

    def batcher(self, max_rows: int = 256, workers: int = 0) -> MicroBatcher[Item, list[int]]:
        return MicroBatcher(self.compute, self.deliver, max_rows, workers=workers)


async def settle(batcher: MicroBatcher[Item, list[int]]) -> None:
    """Wait until every submitted item has been delivered (workers take a little longer)."""
    for _ in range(2000):
        await asyncio.sleep(0.001 if batcher._in_flight else 0)
        if not batcher._items and not batcher._in_flight and not batcher._scheduled:
            return
    raise AssertionError("the batcher did not settle")


def submit_in_one_turn(batcher: MicroBatcher[Item, list[int]], items: list[Item]) -> None:
    async def main() -> None:
        for item in items:
            batcher.submit(item)
        await settle(batcher)

    asyncio.run(main())


def test_items_of_one_loop_turn_run_in_one_call() -> None:
    recorder = Recorder()
    batcher = recorder.batcher()
    submit_in_one_turn(batcher, [Item("m", rows(1)) for _ in range(5)])
    assert recorder.groups == [[1, 1, 1, 1, 1]]
    assert recorder.outcomes == [[1, 1, 1, 1, 1]]
    assert batcher.calls == 1


def test_groups_split_by_model_and_by_the_row_limit() -> None:
    recorder = Recorder()
    batcher = recorder.batcher(max_rows=4)
    old, new = object(), object()
    items = [Item(old, rows(2)), Item(old, rows(2)), Item(old, rows(1)), Item(new, rows(1))]
    items += [Item(new, rows(9)), Item(new, rows(1))]  # larger than the limit: runs alone
    submit_in_one_turn(batcher, items)
    assert recorder.groups == [[2, 2], [1], [1], [9], [1]]


def test_without_merging_or_outside_a_loop_items_run_at_once() -> None:
    recorder = Recorder()
    off = recorder.batcher(max_rows=0)
    submit_in_one_turn(off, [Item("m", rows(1)), Item("m", rows(1))])
    assert recorder.groups == [[1], [1]]
    recorder.groups.clear()
    on = recorder.batcher()
    on.submit(Item("m", rows(3)))  # no running loop: nothing to merge with
    assert recorder.groups == [[3]]


def test_many_row_groups_run_on_the_worker_and_single_rows_on_the_loop() -> None:
    recorder = Recorder()
    batcher = recorder.batcher(workers=1)
    submit_in_one_turn(batcher, [Item("m", rows(64)), Item("m", rows(64))])
    submit_in_one_turn(batcher, [Item("m", rows(1)) for _ in range(8)])
    assert recorder.groups == [[64, 64], [1] * 8]
    assert recorder.threads[0].startswith("inference") and recorder.threads[1] == "MainThread"
    batcher.close()
    submit_in_one_turn(batcher, [Item("m", rows(64))])  # after close: inline
    assert recorder.threads[2] == "MainThread"


def test_items_arriving_while_the_workers_are_full_form_the_next_group() -> None:
    recorder = Recorder()
    recorder.gate.clear()  # the worker holds its first group until the test opens the gate
    batcher = recorder.batcher(workers=1)

    async def main() -> None:
        batcher.submit(Item("m", rows(64)))
        await asyncio.sleep(0)  # flushed: the worker computes it
        batcher.submit(Item("m", rows(48)))
        await asyncio.sleep(0)  # flushed: queued behind it, the worker is full
        assert batcher._in_flight == 2
        for _ in range(3):
            batcher.submit(Item("m", rows(32)))
        await asyncio.sleep(0)
        assert len(batcher._items) == 3  # no flush while full: they wait together
        recorder.gate.set()
        await settle(batcher)

    asyncio.run(main())
    assert recorder.groups == [[64], [48], [32, 32, 32]]
    assert len(batcher._threads) == 1


def test_two_workers_compute_two_groups_at_the_same_time() -> None:
    # each compute waits at a two-party barrier: with one thread at a time the barrier breaks
    recorder = Recorder(barrier=threading.Barrier(2))
    batcher = recorder.batcher(workers=2)

    async def main() -> None:
        batcher.submit(Item("m", rows(200)))
        await asyncio.sleep(0)
        batcher.submit(Item("m", rows(100)))
        await settle(batcher)

    asyncio.run(main())
    assert sorted(recorder.groups) == [[100], [200]]
    assert recorder.outcomes.count([100]) == 1 and recorder.outcomes.count([200]) == 1
    assert sorted(recorder.threads) == ["inference", "inference"]
    threads = batcher._threads
    assert len(threads) == 2 and threads[0] is not threads[1]
    batcher.close()
    for thread in threads:
        thread.join(timeout=5)
        assert not thread.is_alive()


def test_no_more_threads_start_than_workers_allowed() -> None:
    recorder = Recorder()
    recorder.gate.clear()
    batcher = recorder.batcher(max_rows=128, workers=2)

    async def main() -> None:
        for _ in range(6):  # one per turn: each would want a thread of its own
            batcher.submit(Item("m", rows(64)))
            await asyncio.sleep(0)
        assert batcher._in_flight == 4 and len(batcher._items) == 2
        recorder.gate.set()
        await settle(batcher)

    asyncio.run(main())
    assert len(batcher._threads) == 2
    assert sorted(recorder.groups) == [[64]] * 4 + [[64, 64]]  # the two waiting ones merged


def test_a_failing_compute_is_delivered_as_its_outcome_on_the_loop() -> None:
    for workers in (0, 1, 2):
        recorder = Recorder(fail_first=True)
        submit_in_one_turn(recorder.batcher(workers=workers), [Item("m", rows(32))] * 2)
        assert recorder.groups == [[32, 32]]
        assert isinstance(recorder.outcomes[0], RuntimeError)


def test_items_left_by_a_closed_loop_do_not_block_the_next_one() -> None:
    recorder = Recorder()
    batcher = recorder.batcher()
    loop = asyncio.new_event_loop()
    loop.call_soon(batcher.submit, Item("m", rows(2)))
    loop.call_soon(loop.stop)
    loop.run_forever()  # one turn: submit ran, its flush is queued for a turn that never comes
    loop.close()
    assert recorder.groups == []
    submit_in_one_turn(batcher, [Item("m", rows(1))])
    assert recorder.groups == [[1]]


def test_a_loop_closing_while_the_worker_computes_leaves_the_worker_usable() -> None:
    recorder = Recorder()
    recorder.gate.clear()
    batcher = recorder.batcher(workers=1)

    async def hand_over() -> None:
        batcher.submit(Item("m", rows(64)))
        await asyncio.sleep(0)  # flushed: the worker holds it at the gate

    asyncio.run(hand_over())  # the loop closes with the group still being computed
    (thread,) = batcher._threads

    async def on_a_new_loop() -> None:
        batcher.submit(Item("m", rows(32)))
        await asyncio.sleep(0)  # queued behind the held group
        recorder.gate.set()  # the held group's answer must not reach this loop: it is dropped
        await settle(batcher)

    asyncio.run(on_a_new_loop())
    assert recorder.groups == [[32]] and batcher._in_flight == 0
    assert thread.is_alive() and batcher._threads == [thread]
    assert recorder.threads == ["inference", "inference"]


def test_a_crashing_deliver_is_logged_and_later_batches_still_run(
    caplog: pytest.LogCaptureFixture,
) -> None:
    groups: list[int] = []

    def deliver(items: list[Item], outcome: object) -> None:
        groups.append(len(items))
        if len(groups) == 1:
            raise RuntimeError("boom")

    batcher: MicroBatcher[Item, None] = MicroBatcher(lambda items: None, deliver, 256)
    with caplog.at_level(logging.ERROR, logger="ml.serving"):
        submit_in_one_turn(batcher, [Item("m", rows(1))] * 2)  # type: ignore[arg-type]
        submit_in_one_turn(batcher, [Item("m", rows(1))])  # type: ignore[arg-type]
    assert groups == [2, 1]
    assert "batched inference crashed" in caplog.text


def test_deferred_delivers_to_a_callback_and_to_an_awaiter(
    caplog: pytest.LogCaptureFixture,
) -> None:
    early: Deferred[int] = Deferred()
    seen: list[int] = []
    early.on_result(seen.append)
    early.resolve(7)
    late: Deferred[int] = Deferred()
    late.resolve(8)
    late.on_result(seen.append)  # already resolved: called at once
    assert seen == [7, 8] and late.done and late.result() == 8
    with pytest.raises(RuntimeError, match="not ready"):
        Deferred[int]().result()

    async def awaiting() -> int:
        pending: Deferred[int] = Deferred()
        asyncio.get_running_loop().call_soon(pending.resolve, 9)
        return await pending

    assert asyncio.run(awaiting()) == 9

    def broken(value: int) -> None:
        raise OSError("socket gone")

    failing: Deferred[int] = Deferred()
    failing.on_result(broken)
    with caplog.at_level(logging.ERROR, logger="ml.serving"):
        failing.resolve(1)  # logged, not raised: the batch's other answers still go out
    assert "delivering an answer failed" in caplog.text and failing.result() == 1


# -- the service: concurrent requests share a call, each gets its own answer ------------------


def raw_post(body: bytes) -> bytes:
    head = f"POST /predict HTTP/1.1\r\nhost: t\r\ncontent-length: {len(body)}\r\n\r\n"
    return head.encode() + body


@pytest.mark.parametrize("rows_each", [1, 32], ids=["single-rows-on-the-loop", "on-the-worker"])
def test_concurrent_clients_share_calls_and_each_gets_its_own_answer(
    model_dir: Path, rows_each: int
) -> None:
    """Clients hammering the server at once, like a load generator: every answer carries
    exactly its own rows' predictions, and the calls are shared."""
    clients, rounds = 16, 25
    inputs = digits_rows(clients * rounds * rows_each, seed=3).reshape(clients, rounds, -1, 64)
    config = ServingConfig(model_uri=str(model_dir / "model.onnx"))
    failures: list[str] = []
    with threaded_server(config) as (base, server):
        service: ModelService = server.service
        port = int(base.rsplit(":", 1)[1])
        model = service.model

        def client(batches: np.ndarray) -> None:
            with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
                for batch in batches:
                    sock.sendall(raw_post(orjson.dumps({"instances": batch.tolist()})))
                    head, _, body = read_responses(sock, 1)[0].partition(b"\r\n\r\n")
                    probabilities, labels = model.predict(batch)
                    document = orjson.loads(body)
                    got = np.asarray(document["probabilities"], dtype=np.float32)
                    if not head.startswith(b"HTTP/1.1 200") or not (
                        document["predictions"] == labels.tolist()
                        and np.array_equal(got, probabilities)
                    ):
                        failures.append(f"{head[:40]!r}: {document}")

        calls_before = service._batcher.calls
        threads = [threading.Thread(target=client, args=(inputs[i],)) for i in range(clients)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        calls = service._batcher.calls - calls_before
        metrics = service.metrics.exposition().decode()
    requests = clients * rounds
    assert not failures, failures[:3]
    assert calls < requests * 0.8, f"{calls} onnxruntime calls for {requests} requests"
    assert metric_value(metrics, "inference_successes_total", endpoint="predict") == requests
    rows_counted = sum(
        metric_value(metrics, "inference_predictions_total", predicted_class=str(label))
        for label in range(10)
    )
    assert rows_counted == requests * rows_each


def test_requests_of_one_loop_turn_share_one_call(model: LoadedModel) -> None:
    """Deterministic: requests dispatched in the same loop turn go to onnxruntime together."""
    service = ModelService(model, ServingConfig())
    rows = digits_rows(40, seed=6)

    async def main() -> list[Any]:
        answers = [
            service.dispatch("POST", "/predict", [], orjson.dumps({"instances": [row.tolist()]}))
            for row in rows
        ]
        return [await answer for answer in answers]  # type: ignore[misc]

    calls_before = service._batcher.calls
    replies = asyncio.run(main())
    assert service._batcher.calls - calls_before == 1
    _, labels = model.predict(rows)
    assert [orjson.loads(r.body)["predictions"][0] for r in replies] == labels.tolist()


class FlakySession:
    """An onnxruntime stand-in that refuses batches of more than one row or a poisoned row."""

    def __init__(self, real: Any) -> None:
        self.real = real
        self.sizes: list[int] = []

    def run(self, names: Any, feeds: dict[str, np.ndarray]) -> Any:
        batch = feeds["input"]
        self.sizes.append(batch.shape[0])
        if batch.shape[0] > 1 or batch[0, 0] == 13.0:
            raise RuntimeError("onnxruntime failure")
        return self.real.run(names, feeds)


def test_a_failing_merged_call_is_retried_per_request_so_only_the_culprit_fails(
    model: LoadedModel, caplog: pytest.LogCaptureFixture
) -> None:
    session = FlakySession(model.session)
    service = ModelService(replace(model, session=session), ServingConfig())
    good = digits_rows(3, seed=5)
    good[:, 0] = 1.0
    poisoned = good[:1].copy()
    poisoned[0, 0] = 13.0

    async def main() -> list[Any]:
        answers = []
        for batch in (good[:1], poisoned, good[1:2], good[2:3]):
            body = orjson.dumps({"instances": batch.tolist()})
            answers.append(service.dispatch("POST", "/predict", [], body))
        return [answer if isinstance(answer, tuple) else await answer for answer in answers]

    with caplog.at_level(logging.ERROR, logger="ml.serving"):
        replies = asyncio.run(main())
    assert [reply.status for reply in replies] == [200, 500, 200, 200]
    assert session.sizes[0] == 4  # one merged call first, then one per request
    assert sorted(session.sizes[1:]) == [1, 1, 1, 1]
    assert orjson.loads(replies[1].body) == {"error": "internal error"}
    exposition = service.metrics.exposition().decode()
    assert metric_value(exposition, "inference_requests_total", endpoint="predict", code="500") == 1
