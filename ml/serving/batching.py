"""Merge the inference requests of one event-loop iteration into one onnxruntime call.

Why: onnxruntime's fixed cost per call (~10 us for this model on the build machine) is five times
the cost of one more row in a call (~2 us), so under concurrent load one call for every request
that arrived together is far cheaper than one call each. Nothing waits for a batch to fill: the
first request of an iteration schedules the flush with ``call_soon``, so the flush runs right
after the event loop has read every request that was already on the wire; a lone request is
answered one loop turn later, as before. Requests keep the model they started with: a hot reload
in the middle of an iteration splits the merged call by model.

Outside a running event loop (a script, a synchronous test) there is nothing to wait for and the
request is answered at once.
"""

from __future__ import annotations

import asyncio
import logging
import queue
import threading
from collections.abc import Callable, Generator
from typing import Any, Generic, Protocol, TypeVar, cast

import numpy as np

log = logging.getLogger("ml.serving")

T = TypeVar("T")


class Deferred(Generic[T]):
    """An answer produced later on the event loop; one callback, or ``await`` it."""

    __slots__ = ("_result", "_done", "_callback", "_future")

    def __init__(self) -> None:
        self._result: T | None = None
        self._done = False
        self._callback: Callable[[T], None] | None = None
        self._future: asyncio.Future[T] | None = None

    @property
    def done(self) -> bool:
        return self._done

    def result(self) -> T:
        if not self._done:
            raise RuntimeError("the answer is not ready yet")
        return self._result  # type: ignore[return-value]  # set together with _done

    def on_result(self, callback: Callable[[T], None]) -> None:
        """Call ``callback(result)`` when the answer is ready (now, if it already is)."""
        if self._done:
            callback(self._result)  # type: ignore[arg-type]
        else:
            self._callback = callback

    def resolve(self, result: T) -> None:
        self._result, self._done = result, True
        if self._callback is not None:
            try:
                self._callback(result)
            except Exception:  # one failing writer must not keep the batch's others unanswered
                log.exception("delivering an answer failed")
        if self._future is not None and not self._future.done():
            self._future.set_result(result)

    def __await__(self) -> Generator[Any, None, T]:
        if not self._done:
            self._future = asyncio.get_running_loop().create_future()
            yield from self._future.__await__()
        return self._result  # type: ignore[return-value]


class BatchItem(Protocol):
    """What the batcher needs of a request: the model it started with and its rows."""

    @property
    def model(self) -> object: ...

    @property
    def rows(self) -> np.ndarray: ...


Item = TypeVar("Item", bound=BatchItem)


Outcome = TypeVar("Outcome")

# The loop's own work grows with requests (HTTP, decoding, ~25 us each), the model's with rows
# (~3 us each): a group goes to a worker thread only when its requests average this many rows,
# i.e. when the model's share is large enough that overlapping it beats the two thread hand-offs
# (~20-40 us). Measured with one worker: single-row requests at c=64, 34k req/s inline vs 30k on
# the worker; 64-row requests at c=16, 2.6k req/s inline vs 3.2-3.5k on the worker.
OFFLOAD_ROWS_PER_REQUEST = 16


class MicroBatcher(Generic[Item, Outcome]):
    """Collects items while the loop turns and runs them in model groups.

    ``compute(items)`` runs one group (items sharing one model, at most ``max_rows`` rows in all;
    an item larger than that goes alone) and returns its outcome; it must not touch the service's
    state, because with ``workers > 0`` it may run on a worker thread (onnxruntime releases the
    GIL, so the event loop reads, decodes and answers other requests meanwhile; with more cores
    than two, more workers can compute side by side). ``deliver(items, outcome)`` then runs on
    the event loop; an exception from ``compute`` is delivered as the outcome. While every worker
    is computing and has one more group queued, new items wait and form the next group, so the
    batch size follows the load with no timer.
    ``max_rows=0`` turns merging off: every item is computed and delivered on its own, at once.
    """

    def __init__(
        self,
        compute: Callable[[list[Item]], Outcome],
        deliver: Callable[[list[Item], Outcome | Exception], None],
        max_rows: int,
        workers: int = 0,
    ) -> None:
        self._compute = compute
        self._deliver = deliver
        self.max_rows = max_rows
        self._items: list[Item] = []
        self._scheduled = False  # a flush is queued on the loop
        self._in_flight = 0  # groups handed to the worker threads and not yet delivered
        self._loop: asyncio.AbstractEventLoop | None = None
        # the worker threads share one queue; a thread starts when a group finds the others busy
        self._workers = workers if max_rows else 0
        # each group travels with the loop it came from, so its answer never reaches a newer loop
        self._queue: queue.SimpleQueue[tuple[asyncio.AbstractEventLoop, list[Item]] | None] = (
            queue.SimpleQueue()
        )
        self._threads: list[threading.Thread] = []
        self.calls = 0  # groups computed: what the batching tests and benchmarks look at

    def _saturated(self) -> bool:
        # every worker has a group and one more waits for each: new items wait and form the
        # next group. The waiting one lets a worker go on at once when it finishes, instead of
        # idling until the busy loop has run _computed (measured: ~0.8 ms later under load)
        return self._in_flight > 0 and self._in_flight >= 2 * self._workers

    def submit(self, item: Item) -> None:
        loop = self._loop
        if (self._scheduled or self._saturated()) and loop is not None and not loop.is_closed():
            self._items.append(item)  # the common case under load: a flush is already due
            return
        # asyncio._get_running_loop() costs a getpid() system call: once per batch, not per item
        running = asyncio._get_running_loop() if self.max_rows else None
        if running is None:
            self._run_inline([item])
            return
        if running is not loop:  # first use, or a new loop: a closed loop's leftovers are dropped
            self._loop, self._items, self._in_flight = running, [], 0
        self._items.append(item)
        self._scheduled = True
        running.call_soon(self.flush)

    def flush(self) -> None:
        """Run what has been collected; items submitted meanwhile wait for the next flush."""
        self._scheduled = False
        while self._items and not self._saturated():
            group = self._take_group()
            rows = sum(item.rows.shape[0] for item in group)
            if not self._workers or rows < OFFLOAD_ROWS_PER_REQUEST * len(group):
                self._run_inline(group)
                continue
            self._in_flight += 1
            self.calls += 1
            if len(self._threads) < min(self._in_flight, self._workers):
                thread = threading.Thread(
                    target=self._work, args=(self._queue,), name="inference", daemon=True
                )
                thread.start()
                self._threads.append(thread)
            self._queue.put((cast(asyncio.AbstractEventLoop, self._loop), group))

    def _work(
        self, groups: queue.SimpleQueue[tuple[asyncio.AbstractEventLoop, list[Item]] | None]
    ) -> None:
        """A worker thread: compute each group, hand the outcome back to its loop."""
        while (work := groups.get()) is not None:
            loop, group = work
            outcome = self._compute_safely(group)
            try:
                loop.call_soon_threadsafe(self._computed, group, outcome)
            except RuntimeError:  # the loop closed meanwhile: nobody is waiting for the answers
                pass

    def _computed(self, group: list[Item], outcome: Outcome | Exception) -> None:
        self._in_flight -= 1
        self.flush()  # hand the worker the next group first, then answer this one meanwhile
        self._deliver_safely(group, outcome)

    def _take_group(self) -> list[Item]:
        items = self._items
        model = items[0].model
        rows = items[0].rows.shape[0]
        end = 1
        while end < len(items) and items[end].model is model:
            rows += items[end].rows.shape[0]
            if rows > self.max_rows:
                break
            end += 1
        group, self._items = items[:end], items[end:]
        return group

    def _run_inline(self, group: list[Item]) -> None:
        self.calls += 1
        self._deliver_safely(group, self._compute_safely(group))

    def _compute_safely(self, group: list[Item]) -> Outcome | Exception:
        try:
            return self._compute(group)
        except Exception as exc:  # delivered, so every request of the group gets an answer
            return exc

    def _deliver_safely(self, group: list[Item], outcome: Outcome | Exception) -> None:
        try:
            self._deliver(group, outcome)
        except Exception:  # deliver() answers its items itself; this guards the loop's other work
            log.exception("batched inference crashed", extra={"requests": len(group)})

    def close(self) -> None:
        """Let the worker threads end after the groups already queued; later groups run inline."""
        for _ in self._threads:
            self._queue.put(None)
        self._workers = 0
