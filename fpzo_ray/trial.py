"""The Tune trainable: one federated run per trial, checkpointed through Tune.

A trial's config is ``{"trial": TrialPlan.as_dict()}`` (``sweep_spec``): the run
configuration and where the trial belongs in its sweep. Every round's metrics go to
``tune.report``; every ``simulation.checkpoint_every`` rounds the report also carries a Tune
checkpoint holding the server's whole state (weights, mask, optimizer, EMA, counters, client
records; every random draw is a function of the seed and the round, so there is no generator
state to save). A trial restarted from a checkpoint (a resumed sweep) continues from that
round and produces the same metrics as if uninterrupted.

Everything a trial writes (its checkpoints through Tune, its ``config.yaml``, pruned model and
client records directly) goes to the sweep's storage (``fpzo_ray.storage``), never to the
node it happens to run on.
"""

from __future__ import annotations

import logging
import os
import posixpath
import tempfile
from pathlib import Path
from typing import Any

import pandas as pd
import yaml
from ray import tune

from fpzo_ray.artifacts import CLIENTS_FILE, MODEL_FILE, STATE_FILE
from fpzo_ray.config import RunConfig, config_from_dict, config_to_dict
from fpzo_ray.logs import configure as configure_logging
from fpzo_ray.models.pruned import save_pruned
from fpzo_ray.sim.checkpoint import newest_readable, save_server_state
from fpzo_ray.sim.federation import run_federated
from fpzo_ray.storage import Storage, folder_on

log = logging.getLogger(__name__)


def _restored_state(cfg: RunConfig) -> dict[str, Any] | None:
    """The newest usable checkpoint of this trial (older ones when the newest is corrupt or
    not a valid state of this run), read from the sweep's storage wherever it
    is; None for a fresh trial, or when none can be used (it then starts over, saying so)."""
    checkpoint = tune.get_checkpoint()
    if checkpoint is None:
        return None
    # Tune names the newest checkpoint whose results the driver recorded; one written after
    # it (just before an interruption) holds rounds nobody logged, so only older ones are
    # fallbacks.
    newest = posixpath.basename(checkpoint.path)
    trial = folder_on(checkpoint.filesystem, posixpath.dirname(checkpoint.path))
    older = sorted(n for n in trial.listdir() if n.startswith("checkpoint_") and n < newest)
    for name in [newest, *reversed(older)]:
        candidate = tune.Checkpoint(trial.path_of(name), filesystem=checkpoint.filesystem)
        with candidate.as_directory() as local:  # a local checkpoint is read in place
            state = newest_readable([Path(local)], run=cfg)
        if state is not None:
            return state
    log.warning("no readable checkpoint under %s; the trial starts over", trial.location)
    return None


def _trial_folder() -> Storage:
    """This trial's folder in the sweep's storage, where the driver reads its files: on a
    cluster whose nodes share no disk, a file left on this node would be lost to it."""
    from ray.train._internal.session import get_session

    session = get_session()
    assert session is not None  # a Tune trainable always runs in a session
    context = session.storage  # Ray's own record of where this trial persists
    return folder_on(context.storage_filesystem, context.trial_fs_path)


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
    # Tune starts a trial in its own folder; back to the folder the sweep was started from
    # (a Ray job's working directory), so that a relative path in the configuration (a data
    # file, a profiles file) names in the trial what it named in the checks before any work.
    # What a trial writes goes through its storage, never to the current folder.
    os.chdir(os.environ.get("TUNE_ORIG_WORKING_DIR", os.getcwd()))
    # One line per checkpoint in the driver's terminal says nothing the sweep does not.
    logging.getLogger("ray.train._internal.storage").setLevel(logging.WARNING)
    cfg = config_from_dict(config["trial"]["run"])
    folder = _trial_folder()
    folder.write_text("config.yaml", yaml.safe_dump(config_to_dict(cfg), sort_keys=False))
    result = run_federated(cfg, _report, resume_state=_restored_state(cfg))
    with tempfile.TemporaryDirectory() as local:
        save_pruned(result.model, Path(local) / MODEL_FILE)
        pd.DataFrame(result.records).to_csv(Path(local) / CLIENTS_FILE, index=False)
        folder.upload(Path(local))  # before the trial ends: the driver logs them then
