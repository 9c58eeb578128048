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
import yaml
from ray import tune

from fpzo_ray.config import config_from_dict, config_to_dict
from fpzo_ray.logs import configure as configure_logging
from fpzo_ray.models.pruned import MODEL_FILE, save_pruned
from fpzo_ray.sim.checkpoint import STATE_FILE, newest_readable, save_server_state
from fpzo_ray.sim.federation import run_federated

log = logging.getLogger(__name__)


def _restored_state(rounds: int) -> dict[str, Any] | None:
    """The newest usable checkpoint of this trial (older ones when the newest is corrupt or
    not a valid state of a ``rounds``-round run); None for a fresh trial, or when none can be
    used (it then starts over, saying so)."""
    checkpoint = tune.get_checkpoint()
    if checkpoint is None:
        return None
    newest = Path(checkpoint.path)
    if not newest.is_dir():  # storage elsewhere: fetch the newest only
        with checkpoint.as_directory() as local:
            return newest_readable([Path(local)], rounds=rounds)
    # Tune names the newest checkpoint whose results the driver recorded; one written after
    # it (just before an interruption) holds rounds nobody logged, so only older ones are
    # fallbacks.
    older = sorted(
        (f for f in newest.parent.glob("checkpoint_*") if f.name < newest.name), reverse=True
    )
    state = newest_readable([newest, *older], rounds=rounds)
    if state is None:
        log.warning("no readable checkpoint under %s; the trial starts over", newest.parent)
    return state


def _report(metrics: dict[str, Any], state: dict[str, Any] | None = None) -> None:
    if state is None:
        tune.report(metrics)
        return
    with tempfile.TemporaryDirectory() as folder:
        save_server_state(state, Path(folder) / STATE_FILE)
        tune.report(metrics, checkpoint=tune.Checkpoint.from_directory(folder))


def federated_trial(config: dict[str, Any]) -> None:
    """One whole federated run as a Tune trial (see the module docstring)."""
    configure_logging()
    # One line per checkpoint in the driver's terminal says nothing the sweep does not.
    logging.getLogger("ray.train._internal.storage").setLevel(logging.WARNING)
    cfg = config_from_dict(config["trial"]["run"])
    trial_dir = Path(tune.get_context().get_trial_dir())
    trial_dir.mkdir(parents=True, exist_ok=True)
    (trial_dir / "config.yaml").write_text(yaml.safe_dump(config_to_dict(cfg), sort_keys=False))
    result = run_federated(cfg, _report, resume_state=_restored_state(cfg.training.rounds))
    save_pruned(result.model, trial_dir / MODEL_FILE)
    pd.DataFrame(result.records).to_csv(trial_dir / "clients.csv", index=False)
