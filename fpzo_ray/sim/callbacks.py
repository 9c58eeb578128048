"""The round loop's hooks (a run's lifecycle), and a researcher's own callbacks by import path.

A callback is a :class:`RunCallback` subclass; a run calls, in this order:

1. ``on_start(cfg, first_round)``: once the mask is built or the state restored
   (``first_round``: the rounds already done, 0 for a new run);
2. for every round, ``on_round(metrics)`` as soon as the round ends and before the next one
   starts: a callback may add entries to ``metrics`` (they are logged with the round, to
   MLflow and Tune) and return True to end the run after this round (an early stop: the run
   ends FINISHED, tagged ``stopped_early``, its model the one of this round);
3. then ``after_round(metrics, state)`` while the next round runs: recording; ``state`` is
   the server's whole state on the rounds a checkpoint is due (else None);
4. ``on_end(result)`` once the last round is done (``sim.ray.federation.FederatedResult``).

A researcher's callbacks are named in ``training.callbacks`` (``'module:Class'``, built
with no arguments) and run where the run runs: in ``python -m fpzo_ray.run``'s process, or
in a sweep's trial process (what they add to the metrics then reaches the sweep's MLflow
runs through Tune). Plain Python: nothing here knows Ray or MLflow.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from fpzo_ray.config import RunConfig


class RunCallback:
    """A hook into a run's lifecycle (see the module docstring); every method is optional."""

    def on_start(self, cfg: RunConfig, first_round: int) -> None:
        """The run is about to run its rounds, after ``first_round`` already done."""

    def on_round(self, metrics: dict[str, Any]) -> bool | None:
        """A round just ended (``metrics["round"]``, counted from 1): add metrics to
        ``metrics``, or return True to end the run after this round."""
        return None

    def after_round(self, metrics: dict[str, Any], state: dict[str, Any] | None) -> None:
        """Record the round; ``state`` is the server's state when a checkpoint is due."""

    def on_end(self, result: Any) -> None:
        """The run ended normally (every round, or an early stop); ``result`` holds the
        final model and the client records."""


class CallbackList(RunCallback):
    """Several callbacks as one: ``on_start``, ``on_round`` and ``after_round`` in the given
    order, ``on_end`` in reverse (like the ends of nested blocks: a recorder listed before
    the run-folder writer records each round before the writer keeps its checkpoint, and
    logs the files the writer wrote at the end)."""

    def __init__(self, callbacks: Sequence[RunCallback]) -> None:
        self.callbacks = list(callbacks)

    def on_start(self, cfg: RunConfig, first_round: int) -> None:
        for callback in self.callbacks:
            callback.on_start(cfg, first_round)

    def on_round(self, metrics: dict[str, Any]) -> bool:
        stop = False
        for callback in self.callbacks:  # every one sees the round, whoever asks to stop
            stop = bool(callback.on_round(metrics)) or stop
        return stop

    def after_round(self, metrics: dict[str, Any], state: dict[str, Any] | None) -> None:
        for callback in self.callbacks:
            callback.after_round(metrics, state)

    def on_end(self, result: Any) -> None:
        for callback in reversed(self.callbacks):
            callback.on_end(result)


def researcher_callbacks(cfg: RunConfig) -> list[RunCallback]:
    """The callbacks ``training.callbacks`` names, each built with no arguments (checked
    before any work: ``registry.check_callback``)."""
    from fpzo_ray.config import listed_entries
    from fpzo_ray.registry import import_target

    return [import_target(path)() for path in listed_entries(cfg.training.callbacks)]


class EachRound(RunCallback):
    """``fn(metrics, state)`` after every round: a bench's or a test's callback."""

    def __init__(self, fn: Callable[[dict[str, Any], dict[str, Any] | None], Any]) -> None:
        self.fn = fn

    def after_round(self, metrics: dict[str, Any], state: dict[str, Any] | None) -> None:
        self.fn(metrics, state)
