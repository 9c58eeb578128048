"""The Tune trainable: one federated run per trial.

A trial's config is ``{"trial": TrialPlan.as_dict()}`` (``sweep.spec``): the run
configuration and where the trial belongs in its sweep. The run is the lifecycle's
composition for a trial (``lifecycle``): the researcher's callbacks, the run-folder writer
(``config.yaml`` at the start, ``model.pt`` and ``clients.csv`` at the end, in the trial's
folder of the sweep's storage) and the Tune reporter (every round, and a checkpoint every
``simulation.checkpoint_every`` rounds). A trial restarted from a checkpoint (a resumed
sweep, a lost node) continues from that round and produces the same metrics as if
uninterrupted; MLflow is written by the sweep's driver (``sweep.callbacks``).

Everything a trial writes goes to the sweep's storage (``fpzo_ray.storage``), never only to
the node it happens to run on; what it stages locally lives in the trial's working folder,
inside Ray's session folder.
"""

from __future__ import annotations

import logging
import os
import posixpath
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any

from ray import tune

from fpzo_ray.config import RunConfig, config_from_dict
from fpzo_ray.lifecycle.run_folder import RunFolder, RunFolderWriter
from fpzo_ray.lifecycle.tune_reporter import TuneReporter
from fpzo_ray.logs import configure as configure_logging
from fpzo_ray.sim.callbacks import CallbackList, researcher_callbacks
from fpzo_ray.sim.checkpoint import newest_readable
from fpzo_ray.sim.ray.federation import run_federated
from fpzo_ray.storage import LocalCopy, folder_on

log = logging.getLogger(__name__)


def _restored_state(cfg: RunConfig) -> dict[str, Any] | None:
    """The newest usable checkpoint of this trial (older ones when the newest is corrupt or
    not a valid state of this run), read from the sweep's storage wherever it is; None for
    a fresh trial, or when none can be used (it then starts over, saying so)."""
    checkpoint = tune.get_checkpoint()
    if checkpoint is None:
        return None
    # Tune names the newest checkpoint whose results the driver recorded; one written after
    # it (just before an interruption) holds rounds nobody logged, so only older ones are
    # fallbacks.
    newest = posixpath.basename(checkpoint.path)
    trial = folder_on(checkpoint.filesystem, posixpath.dirname(checkpoint.path))
    older = sorted(n for n in trial.listdir() if n.startswith("checkpoint_") and n < newest)

    def opener(name: str) -> AbstractContextManager[str]:
        # a local checkpoint is read in place, a remote one through a local copy
        candidate = tune.Checkpoint(trial.path_of(name), filesystem=checkpoint.filesystem)
        return candidate.as_directory()

    state = newest_readable([opener(n) for n in [newest, *reversed(older)]], run=cfg)
    if state is None:
        log.warning("no readable checkpoint under %s; the trial starts over", trial.location)
    return state


def _trial_folder() -> tuple[RunFolder, Path]:
    """This trial's run folder in the sweep's storage, where the driver reads its files (on
    a cluster whose nodes share no disk, a file left on this node would be lost to it),
    and a local staging folder in the trial's working folder."""
    from ray.train._internal.session import get_session

    session = get_session()
    assert session is not None  # a Tune trainable always runs in a session
    context = session.storage  # Ray's own record of where this trial persists
    storage = folder_on(context.storage_filesystem, context.trial_fs_path)
    staging = Path(context.trial_working_directory) / "fpzo_staging"
    return RunFolder(LocalCopy(storage, staging / "folder")), staging


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
    folder, staging = _trial_folder()
    folder.write_config(cfg)
    folder.push()
    callbacks = CallbackList(
        [
            *researcher_callbacks(cfg),
            RunFolderWriter(folder, checkpoints=False),  # Tune keeps a trial's checkpoints
            TuneReporter(staging / "checkpoints"),
        ]
    )
    run_federated(cfg, callbacks, resume_state=_restored_state(cfg))
    folder.push()  # before the trial ends: the driver logs the files then
