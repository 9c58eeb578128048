"""Tune's experiment state signed as Tune rewrites it (see ``fpzo_ray.signing``)."""

from __future__ import annotations

import time
from typing import Any

from ray.tune import Callback

from fpzo_ray.signing import sign_tune_state
from fpzo_ray.storage import Storage


class TuneStateSigner(Callback):
    """Signs Tune's experiment state (``signing``) as Tune rewrites it while a phase runs, at
    most every ``every_s`` seconds: a sweep whose driver dies (a lost head) resumes from a
    signed state. Called after Tune's own save in each step of its loop."""

    def __init__(self, phase_folder: Storage, every_s: float = 5.0) -> None:
        self.phase_folder = phase_folder
        self.every_s = every_s
        self.signed_at = 0.0

    def on_step_end(self, iteration: int, trials: list, **info: Any) -> None:
        if time.monotonic() - self.signed_at >= self.every_s:
            self.signed_at = time.monotonic()
            sign_tune_state(self.phase_folder)
