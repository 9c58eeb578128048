"""Early stopping per cell: one ASHA bracket for each grid cell of a search.

A sweep runs the searches of all its cells in one Tune experiment (so that trials of
different cells share the cluster), but a learning rate must only compete with the other
learning rates of its own cell: a BP FedAvg trial at round 50 says nothing about whether a
ZO trial at round 50 is worth continuing. This scheduler keeps one
``AsyncHyperBandScheduler`` per cell (``config["trial"]["cell"]``), over ``round``.

A rung decision reads the first result at or after the rung that carries the metric (the
metric is reported at evaluation rounds only), so rungs are best placed on multiples of
``training.eval_every``. ASHA is asynchronous: which trials a decision compares against
depends on the order in which they reach the rung, so a search with ASHA is not
bit-reproducible across runs (a search without it is).
"""

from __future__ import annotations

from typing import Any

from ray.tune.schedulers import AsyncHyperBandScheduler, FIFOScheduler

from fpzo_ray.config import config_from_dict


class PerCellASHA(FIFOScheduler):
    """ASHA early stopping, deciding within each cell only (a BP trial never competes
    with a ZO one), over rounds, at the first evaluation at or after each rung."""

    def __init__(self, metric: str, mode: str, grace_period: int, reduction_factor: float) -> None:
        super().__init__()
        # Not ``self._metric``: Tune would then insist that every result carries it, and the
        # metric is only reported at evaluation rounds.
        self.selection_metric = metric
        self.mode = mode
        self.grace_period = grace_period
        self.reduction_factor = reduction_factor
        self.by_cell: dict[str, AsyncHyperBandScheduler] = {}

    def _scheduler(self, trial: Any) -> AsyncHyperBandScheduler:
        plan = trial.config["trial"]
        cell = plan["cell"]
        if cell not in self.by_cell:
            rounds = config_from_dict(plan["run"]).training.rounds
            self.by_cell[cell] = AsyncHyperBandScheduler(
                time_attr="round",
                metric=self.selection_metric,
                mode=self.mode,
                max_t=rounds,
                grace_period=self.grace_period,
                reduction_factor=self.reduction_factor,
            )
        return self.by_cell[cell]

    def set_search_properties(self, metric: str | None, mode: str | None, **spec: Any) -> bool:
        return True  # metric and mode come from the sweep file

    def on_trial_add(self, tune_controller: Any, trial: Any) -> None:
        self._scheduler(trial).on_trial_add(tune_controller, trial)

    def on_trial_result(self, tune_controller: Any, trial: Any, result: dict) -> str:
        return self._scheduler(trial).on_trial_result(tune_controller, trial, result)

    def on_trial_complete(self, tune_controller: Any, trial: Any, result: dict) -> None:
        if trial.trial_id in self._scheduler(trial)._trial_info:
            self._scheduler(trial).on_trial_complete(tune_controller, trial, result)

    def on_trial_remove(self, tune_controller: Any, trial: Any) -> None:
        self._scheduler(trial)._trial_info.pop(trial.trial_id, None)

    def on_trial_error(self, tune_controller: Any, trial: Any) -> None:
        self._scheduler(trial)._trial_info.pop(trial.trial_id, None)

    def debug_string(self) -> str:
        stopped = sum(s._num_stopped for s in self.by_cell.values())
        return f"ASHA per cell over rounds: {len(self.by_cell)} cells, {stopped} trials stopped"


__all__ = ["PerCellASHA"]
