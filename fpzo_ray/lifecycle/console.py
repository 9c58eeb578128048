"""What ``python -m fpzo_ray.run`` prints while it runs: output only, nothing reads it.

The pruning summary once, a line per evaluated round (and, between evaluations, one at least
every ``PROGRESS_EVERY_S`` seconds: the run is alive and says how far it is, with the
per-round validation sample's accuracy), a warning for
rounds whose sampled clients were not all aggregated, and the run's totals of those at the
end. A sweep prints per trial instead (``sweep.callbacks.TrialProgress``).
"""

from __future__ import annotations

import sys
import time
from typing import Any

from fpzo_ray.sim.callbacks import RunCallback

#: A round without an evaluation prints a line when it is the run's first, or when this
#: many seconds passed since the last line.
PROGRESS_EVERY_S = 10.0


class ConsoleProgress(RunCallback):
    """The run's console lines (see the module docstring); ``began``: the run's start."""

    def __init__(self, began: float) -> None:
        self.began = began
        self.last_line = 0.0
        self.failures_said_at: float | None = None
        self.last_metrics: dict[str, Any] = {}

    def after_round(self, metrics: dict[str, Any], state: dict[str, Any] | None) -> None:
        from fpzo_ray.task import evaluation_parts  # torch: loaded by the run by now
        from fpzo_ray.tracking import SETUP_KEY

        self.last_metrics = metrics
        if SETUP_KEY in metrics:
            self._say_pruning(metrics[SETUP_KEY])
        now = time.time()
        self._say_client_failures(metrics, now)
        flops = f"client GFLOPs {metrics['cumulative_client_forward_flops'] / 1e9:.2f}"
        if evaluated := evaluation_parts(metrics):
            parts = "  ".join(evaluated)
            print(f"round {metrics['round']:4d}  {parts}  {flops}  ({now - self.began:.0f} s)")
        elif not self.last_line or now - self.last_line >= PROGRESS_EVERY_S:
            sample = metrics.get("val_subset_accuracy")  # the per-round validation sample
            seen = f"val subset accuracy {sample:.4f}  " if sample is not None else ""
            print(f"round {metrics['round']:4d}  {seen}{flops}  ({now - self.began:.0f} s)")
        else:
            return
        sys.stdout.flush()
        self.last_line = now

    def on_end(self, result: Any) -> None:
        if totals := client_failure_totals(self.last_metrics):
            print(f"warning: over the run, {totals}", file=sys.stderr)

    @staticmethod
    def _say_pruning(setup: dict[str, Any]) -> None:
        failed = setup.get("pruning_failed_clients", 0)
        print(
            f"pruning: {setup['pruning_method']}, kept fraction {setup['kept_fraction']:.3f},"
            f" {setup['num_trained']} trained coordinates"
            + (f" ({failed} pruning clients failed: their scores left out)" if failed else "")
        )
        for warning in setup.get("pruning_warnings", []):
            print(f"warning: {warning}", file=sys.stderr, flush=True)

    def _say_client_failures(self, metrics: dict[str, Any], now: float) -> None:
        """A warning line for a round whose sampled clients were not all aggregated: the
        first such round's, then at most one every ``PROGRESS_EVERY_S`` while they go on."""
        text = metrics.get("client_failures")
        said = self.failures_said_at
        if text and (said is None or now - said >= PROGRESS_EVERY_S):
            print(f"warning: round {metrics['round']}: {text}", file=sys.stderr, flush=True)
            self.failures_said_at = now


def client_failure_totals(metrics: dict[str, Any]) -> str:
    """The run's sampled clients that were not aggregated, by kind, from its last round's
    cumulative counters ("" when there were none)."""
    kinds = {
        "cumulative_failed_clients": "failed",
        "cumulative_oom_clients": "out of memory",
        "cumulative_unavailable_clients": "unavailable",
        "cumulative_stragglers": "past the deadline",
    }
    parts = [f"{int(metrics[k])} {words}" for k, words in kinds.items() if metrics.get(k)]
    return "sampled clients not aggregated: " + ", ".join(parts) if parts else ""
