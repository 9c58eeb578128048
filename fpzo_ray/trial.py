"""The Tune trainable: one federated run per trial, checkpointed through Tune.

A trial's config is ``{"trial": TrialPlan.as_dict()}`` (``sweep_spec``): the run
configuration and where the trial belongs in its sweep. Every round's metrics go to
``tune.report``; every ``simulation.checkpoint_every`` rounds the report also carries a Tune
checkpoint holding the server's whole state (weights, mask, optimizer, EMA, counters, client
records; every random draw is a function of the seed and the round, so there is no generator
state to save). A trial restarted from a checkpoint (a resumed sweep) continues from that
round and produces the same metrics as if uninterrupted.
"""

from __future__ import annotations

import logging
import tempfile
from pathlib import Path
from typing import Any

import pandas as pd
import torch
import yaml
from ray import tune

from fpzo_ray.config import config_from_dict, config_to_dict
from fpzo_ray.sim.federation import run_federated

STATE_FILE = "server_state.pt"


def _restored_state() -> dict[str, Any] | None:
    checkpoint = tune.get_checkpoint()
    if checkpoint is None:
        return None
    with checkpoint.as_directory() as folder:
        return torch.load(Path(folder) / STATE_FILE, weights_only=False)


def _report(metrics: dict[str, Any], state: dict[str, Any] | None = None) -> None:
    if state is None:
        tune.report(metrics)
        return
    with tempfile.TemporaryDirectory() as folder:
        torch.save(state, Path(folder) / STATE_FILE)
        tune.report(metrics, checkpoint=tune.Checkpoint.from_directory(folder))


def federated_trial(config: dict[str, Any]) -> None:
    # One line per checkpoint in the driver's terminal says nothing the sweep does not.
    logging.getLogger("ray.train._internal.storage").setLevel(logging.WARNING)
    cfg = config_from_dict(config["trial"]["run"])
    trial_dir = Path(tune.get_context().get_trial_dir())
    trial_dir.mkdir(parents=True, exist_ok=True)
    (trial_dir / "config.yaml").write_text(yaml.safe_dump(config_to_dict(cfg), sort_keys=False))
    records = run_federated(cfg, _report, resume_state=_restored_state())
    pd.DataFrame(records).to_csv(trial_dir / "clients.csv", index=False)
