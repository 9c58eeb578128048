"""Writes to the MLflow store off the caller's thread, with each round's metrics coalesced.

One ``log_batch`` call to a SQLite store costs 20-30 ms here, whatever it holds (it is mostly
one transaction); its per-metric part is a few ms a round. A digits round of the engine takes
about 25 ms, so a synchronous call per round would pace the whole simulation. A
:class:`StoreWriter` keeps the writes in order on one thread of its own and sends all the
metrics queued for a run since its last write as one ``log_batch`` (at most ``MAX_METRICS``
a call, MLflow's limit): a store that is slower than the rounds gets fewer, larger calls
instead of a growing backlog.

The queue holds two kinds of entries: metrics (coalesced) and calls (params, tags,
artifacts, the end of a run), run in the order they were queued, so a run never ends before
its last metrics are written. A write that fails is raised in the caller's thread at its
next :meth:`StoreWriter.metrics`, :meth:`StoreWriter.call` or :meth:`StoreWriter.flush`.
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Callable
from typing import Any

#: MLflow's limit on the metrics of one ``log_batch`` call.
MAX_METRICS = 1000

_Entry = tuple[str, Any, Any]  # ("metrics", run id, [Metric]) or ("call", fn, args)


class StoreWriter:
    """Ordered, coalescing writes to an MLflow client (see the module docstring)."""

    def __init__(self, client: Any) -> None:
        self.client = client  # an mlflow.MlflowClient
        self._queue: deque[_Entry] = deque()
        self._lock = threading.Condition()
        self._busy = False
        self._error: BaseException | None = None
        self._thread: threading.Thread | None = None

    def __reduce__(self) -> tuple[Any, ...]:
        """Tune pickles the callbacks (and their tracker): a thread cannot be; an empty
        writer for the same client can."""
        return (StoreWriter, (self.client,))

    # -- the caller's side ----------------------------------------------------------------
    def metrics(self, run_id: str, metrics: list[Any]) -> None:
        """Queue ``mlflow.entities.Metric`` objects for ``run_id``."""
        if metrics:
            self._put(("metrics", run_id, list(metrics)))

    def call(self, fn: Callable[..., Any], *args: Any) -> None:
        """Queue ``fn(*args)`` behind every write queued before it."""
        self._put(("call", fn, args))

    def flush(self) -> None:
        """Wait until every queued write is done (raising the first that failed)."""
        with self._lock:
            while self._queue or self._busy:
                self._lock.wait()
        self._raise_failed()

    def _put(self, entry: _Entry) -> None:
        self._raise_failed()
        with self._lock:
            self._queue.append(entry)
            if self._thread is None:
                self._thread = threading.Thread(
                    target=self._drain, name="mlflow-writer", daemon=True
                )
                self._thread.start()
            self._lock.notify_all()

    def _raise_failed(self) -> None:
        if self._error is not None:
            error, self._error = self._error, None
            raise error

    # -- the writer thread ----------------------------------------------------------------
    def _drain(self) -> None:
        while True:
            with self._lock:
                while not self._queue:
                    self._busy = False
                    self._lock.notify_all()
                    self._lock.wait()
                self._busy = True
                entries = list(self._queue)
                self._queue.clear()
            try:
                self._write(entries)
            except BaseException as exc:  # noqa: BLE001 - handed to the caller's thread
                self._error = exc

    def _write(self, entries: list[_Entry]) -> None:
        pending: dict[str, list[Any]] = {}  # run id -> metrics not yet sent, in order

        def send() -> None:
            for run_id, items in pending.items():
                for start in range(0, len(items), MAX_METRICS):
                    self.client.log_batch(run_id, metrics=items[start : start + MAX_METRICS])
            pending.clear()

        for kind, first, second in entries:
            if kind == "metrics":
                pending.setdefault(first, []).extend(second)
            else:
                send()  # what was queued before this call is written before it
                first(*second)
        send()
