"""The MLflow writer thread: writes in order, metrics coalesced, failures raised to the caller."""

from __future__ import annotations

import threading

import pytest

from fpzo_ray.mlflow_writer import MAX_METRICS, StoreWriter


class _Client:
    """Records the writes an MlflowClient would receive."""

    def __init__(self, gate: threading.Event | None = None) -> None:
        self.calls: list[tuple] = []
        self.gate = gate
        self.writing = threading.Event()

    def log_batch(self, run_id, metrics):
        self.writing.set()
        if self.gate is not None:
            self.gate.wait()
        self.calls.append(("log_batch", run_id, list(metrics)))


def test_metrics_queued_while_the_store_is_busy_go_in_one_call_and_in_order():
    gate = threading.Event()
    client = _Client(gate)
    writer = StoreWriter(client)
    writer.metrics("a", [1])
    client.writing.wait()  # the thread is now blocked writing this one
    for step in range(2, 6):
        writer.metrics("a", [step])
    writer.call(client.calls.append, ("end", "a"))
    writer.metrics("a", [6])
    gate.set()
    writer.flush()
    assert client.calls == [
        ("log_batch", "a", [1]),
        ("log_batch", "a", [2, 3, 4, 5]),  # coalesced while the first write ran
        ("end", "a"),  # a call waits for the metrics queued before it
        ("log_batch", "a", [6]),
    ]


def test_a_batch_never_exceeds_mlflows_limit():
    gate = threading.Event()
    client = _Client(gate)
    writer = StoreWriter(client)
    writer.metrics("a", [0])
    client.writing.wait()
    writer.metrics("a", list(range(2 * MAX_METRICS + 5)))
    gate.set()
    writer.flush()
    assert [len(c[2]) for c in client.calls] == [1, MAX_METRICS, MAX_METRICS, 5]


def test_a_failed_write_is_raised_in_the_callers_thread():
    def broken():
        raise OSError("disk full")

    writer = StoreWriter(_Client())
    writer.call(broken)
    with pytest.raises(OSError, match="disk full"):
        writer.flush()
    writer.flush()  # raised once
