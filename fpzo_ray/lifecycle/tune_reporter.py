"""A sweep trial's rounds to Tune: each round's metrics, and the checkpoints.

Every round goes to ``tune.report``; a round with a checkpoint due carries a Tune checkpoint
holding the server's whole state (weights, mask, optimizer, EMA, counters, client records;
every random draw is a function of the seed and the round, so there is no generator state to
save). The checkpoint is staged in the trial's working folder (in Ray's session folder,
removed with it) and Tune copies it to the sweep's storage.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

from fpzo_ray.artifacts import STATE_FILE
from fpzo_ray.sim.callbacks import RunCallback


class TuneReporter(RunCallback):
    """``tune.report`` for every round; ``staging``: a local folder for checkpoints."""

    def __init__(self, staging: Path) -> None:
        self.staging = staging

    def after_round(self, metrics: dict[str, Any], state: dict[str, Any] | None) -> None:
        from ray import tune

        from fpzo_ray.sim.checkpoint import save_server_state

        if state is None:
            tune.report(metrics)
            return
        folder = self.staging / f"checkpoint_{state['rounds_done']:06d}"
        try:
            save_server_state(state, folder / STATE_FILE)
            tune.report(metrics, checkpoint=tune.Checkpoint.from_directory(folder))
        finally:
            shutil.rmtree(folder, ignore_errors=True)
