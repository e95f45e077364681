"""Merge the inference requests of one event-loop iteration into one onnxruntime call.

Why: onnxruntime's fixed cost per call (~15 us for this model on the build machine) is three times
the cost of one more row in a call (~5 us), so under concurrent load one call for every request
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
from collections.abc import Callable, Generator
from typing import Any, Generic, Protocol, TypeVar

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


class MicroBatcher(Generic[Item]):
    """Collects items during a loop iteration and hands them to ``run`` in model groups.

    ``run(items)`` receives items that share one model and hold at most ``max_rows`` rows in all
    (an item larger than that goes alone); it must answer every item it is given.
    ``max_rows=0`` turns merging off: every item is run on its own, at once.
    """

    def __init__(self, run: Callable[[list[Item]], None], max_rows: int) -> None:
        self._run = run
        self.max_rows = max_rows
        self._items: list[Item] = []
        self._scheduled = False
        self._loop: asyncio.AbstractEventLoop | None = None
        self.calls = 0  # merged calls made: what the batching tests and benchmarks look at

    def submit(self, item: Item) -> None:
        loop = self._loop
        if self._scheduled and loop is not None and not loop.is_closed():
            self._items.append(item)  # the common case under load: a flush is already due
            return
        # asyncio._get_running_loop() costs a getpid() system call: once per batch, not per item
        loop = asyncio._get_running_loop() if self.max_rows else None
        if loop is None:
            self._run_group([item])
            return
        self._items = [item]  # anything left from a loop that closed before flushing is dropped
        self._loop, self._scheduled = loop, True
        loop.call_soon(self.flush)

    def flush(self) -> None:
        """Run everything collected so far; requests submitted while running wait for the next."""
        items, self._items, self._scheduled = self._items, [], False
        start, count = 0, len(items)
        while start < count:
            model = items[start].model
            rows = items[start].rows.shape[0]
            end = start + 1
            while end < count and items[end].model is model:
                rows += items[end].rows.shape[0]
                if rows > self.max_rows:
                    break
                end += 1
            self._run_group(items[start:end])
            start = end

    def _run_group(self, items: list[Item]) -> None:
        self.calls += 1
        try:
            self._run(items)
        except Exception:  # run() answers its items itself; this guards the loop's other work
            log.exception("batched inference crashed", extra={"requests": len(items)})
