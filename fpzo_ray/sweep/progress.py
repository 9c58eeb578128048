"""What a running sweep says: a line per trial event, and every ``every_s`` seconds one line
of overall progress (trials done / running / pending / failed, rounds done across trials,
elapsed time, time left at the pace so far), also set as the ``progress`` tag of the sweep's
parent run so that the MLflow UI shows it. Output only: nothing reads what it prints (what a
sweep records is ``sweep.callbacks``)."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import Any

from ray.tune import Callback

from fpzo_ray.config import config_from_dict
from fpzo_ray.task import evaluation_parts


def _rounds(trial: Any) -> int:
    return config_from_dict(trial.config["trial"]["run"]).training.rounds


def _duration(seconds: float) -> str:
    minutes, secs = divmod(int(round(seconds)), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes:02d} min" if hours else f"{minutes} min {secs:02d} s"


class TrialProgress(Callback):
    """Tune callback of one phase. ``plans``: the phase's trials (``sweep.spec.TrialPlan``),
    so that trials Tune has not created yet count as pending; ``publish(line)`` receives each
    overall progress line (the sweep sets it as a tag of its parent run)."""

    def __init__(
        self,
        started: float,
        phase: str,
        plans: Sequence[Any],
        publish: Callable[[str], None] | None = None,
        every_s: float = 10.0,
    ) -> None:
        self.started = started
        self.phase = phase
        self.planned_trials = len(plans)
        self.planned_rounds = sum(config_from_dict(p.run).training.rounds for p in plans)
        self.publish = publish
        self.every_s = every_s
        self.phase_started = time.time()
        self.rounds_at_start: int | None = None  # rounds already done when this run began
        self.last_line = 0.0
        #: when each trial last said that sampled clients failed (the first time, then at
        #: most every ``every_s`` while they go on)
        self.failures_said_at: dict[str, float] = {}

    def _say(self, text: str) -> None:
        print(f"[{time.time() - self.started:6.0f} s] {text}", flush=True)

    # -- trial events ------------------------------------------------------------------
    def on_trial_start(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self._say(f"{trial}: started")

    def on_trial_result(
        self, iteration: int, trials: list, trial: Any, result: dict, **info: Any
    ) -> None:
        rounds = _rounds(trial)
        r = int(result.get("round", 0))
        failures = result.get("client_failures")
        said = self.failures_said_at.get(trial.trial_id)
        if failures and (said is None or time.time() - said >= self.every_s):
            self._say(f"{trial}: warning: round {r}: {failures}")
            self.failures_said_at[trial.trial_id] = time.time()
        evaluated = evaluation_parts(result, with_loss=False)
        if evaluated and (r % max(1, rounds // 4) == 0 or r == rounds):
            self._say(f"{trial}: round {r}/{rounds}, {', '.join(evaluated)}")

    def on_trial_complete(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        rounds = _rounds(trial)
        done = int((trial.last_result or {}).get("round", 0))
        self._say(
            f"{trial}: " + ("finished" if done >= rounds else f"stopped early at round {done}")
        )

    def on_trial_error(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        from fpzo_ray.failure import error_summary
        from fpzo_ray.sweep.callbacks import trial_error_text

        self._say(f"{trial}: FAILED: " + error_summary(trial_error_text(trial)))

    # -- overall progress --------------------------------------------------------------
    def on_step_end(self, iteration: int, trials: list, **info: Any) -> None:
        now = time.time()
        if now - self.last_line < self.every_s:
            return
        self.last_line = now
        line = self.summary(trials, now)
        self._say(line)
        if self.publish is not None:
            self.publish(line)

    def summary(self, trials: Sequence[Any], now: float) -> str:
        """``phase: 3/8 trials done, 2 running, 3 pending, 0 failed; 812/1600 rounds;
        elapsed 2 min 03 s, about 1 min 58 s left``."""
        status = [t.status for t in trials]
        done, failed = status.count("TERMINATED"), status.count("ERROR")
        running = status.count("RUNNING")
        pending = self.planned_trials - done - failed - running
        ran = {id(t): int((t.last_result or {}).get("round", 0)) for t in trials}
        rounds = sum(ran.values())
        # rounds that will never run: cut by an early stop or an error
        cut = sum(_rounds(t) - ran[id(t)] for t in trials if t.status in ("TERMINATED", "ERROR"))
        planned = self.planned_rounds - cut
        if self.rounds_at_start is None:
            self.rounds_at_start = rounds
        elapsed = now - self.phase_started
        progressed = rounds - self.rounds_at_start
        left = (
            ""
            if progressed <= 0
            else f", about {_duration(elapsed * (planned - rounds) / progressed)} left"
        )
        return (
            f"{self.phase}: {done}/{self.planned_trials} trials done, {running} running, "
            f"{pending} pending, {failed} failed; {rounds}/{planned} rounds; "
            f"elapsed {_duration(now - self.started)}{left}"
        )
