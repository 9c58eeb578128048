"""A run's folder, written by one writer for both entry points.

``python -m fpzo_ray.run`` keeps ``<results>/runs/<name>_<time>/``, a sweep trial keeps its
Tune trial folder; both hold the same files (``fpzo_ray.artifacts``): the resolved
configuration (``config.yaml``), checkpoints of the server state (the run's own, or Tune's
in a sweep), and at the end ``model.pt`` (``models.load_pruned``) and ``clients.csv``. A
folder is written locally and copied to its storage (``storage.LocalCopy``: a bucket, or
nothing to copy when the storage is this folder), so a run survives its machine.

Reading a checkpoint back falls back to an older one when the newest is unreadable or not a
state of this run (``sim.checkpoint.newest_readable``, the one implementation of that rule,
for the run's own checkpoints and for Tune's).
"""

from __future__ import annotations

import shlex
import shutil
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from fpzo_ray.artifacts import CLIENTS_FILE, CONFIG_FILE, MODEL_FILE, RUN_ID_FILE, STATE_FILE
from fpzo_ray.config import ConfigError, RunConfig, config_from_dict, config_to_dict, read_yaml
from fpzo_ray.sim.callbacks import RunCallback
from fpzo_ray.storage import LocalCopy

if TYPE_CHECKING:
    from fpzo_ray.sim.ray.federation import FederatedResult

#: How many of its own checkpoints a run keeps (the newest, and one to fall back to).
KEEP_CHECKPOINTS = 2


class RunFolder:
    """Where a run keeps what it needs to be resumed and what it leaves: a local folder,
    copied to the run's storage (``--storage``: a bucket) by :meth:`push`."""

    def __init__(self, copy: LocalCopy) -> None:
        self.copy = copy
        self.path = copy.path

    @property
    def location(self) -> str:
        """Where the run persists (what ``--resume`` takes)."""
        return self.copy.storage.location

    def push(self) -> None:
        """Everything the folder holds to the storage (nothing when it is the storage)."""
        self.copy.push()

    # -- what a run writes ----------------------------------------------------------------
    def write_config(self, cfg: RunConfig, signed: bool = False) -> None:
        """``config.yaml``: the resolved configuration, every default included; ``signed``
        when a resume will run the code it names (``signing``)."""
        import yaml

        text = yaml.safe_dump(config_to_dict(cfg), sort_keys=False)
        (self.path / CONFIG_FILE).write_text(text)
        if signed:
            from fpzo_ray.signing import sign

            sign(self.path, [CONFIG_FILE])

    def save_checkpoint(self, state: dict[str, Any]) -> None:
        """The server's state as ``checkpoint_<rounds done>``; the oldest beyond
        :data:`KEEP_CHECKPOINTS` removed; the folder pushed."""
        from fpzo_ray.sim.checkpoint import save_server_state

        save_server_state(state, self.path / f"checkpoint_{state['rounds_done']:06d}" / STATE_FILE)
        for old in self.checkpoints()[KEEP_CHECKPOINTS:]:
            shutil.rmtree(old, ignore_errors=True)
        self.copy.push(drop_missing="checkpoint_")  # the removed ones there too

    def write_results(self, result: FederatedResult) -> None:
        """``model.pt`` (the final model, stored sparsely) and ``clients.csv`` (one row per
        sampled client and round; pandas, imported here: a run needs it only now)."""
        import pandas as pd

        from fpzo_ray.models.pruned import save_pruned

        save_pruned(result.model, self.path / MODEL_FILE)
        pd.DataFrame(result.records).to_csv(self.path / CLIENTS_FILE, index=False)

    # -- what a resumed run reads ---------------------------------------------------------
    def checkpoints(self) -> list[Path]:
        """Checkpoint folders, newest first."""
        return sorted(self.path.glob("checkpoint_*"), reverse=True)

    def finished(self) -> bool:
        """Whether the run ended (its client records are written only then)."""
        return (self.path / CLIENTS_FILE).is_file()

    def restored_state(self, cfg: RunConfig) -> dict[str, Any] | None:
        """The newest usable checkpoint (older ones when it is not), or None."""
        from fpzo_ray.sim.checkpoint import newest_readable

        return newest_readable(self.checkpoints(), run=cfg, named_by_round=True)

    def config(self) -> RunConfig:
        """The run's configuration, once the files that decide what a resumed run does are
        checked to be signed by this user (``signing``): its import paths run code."""
        from fpzo_ray.artifacts import TRACKING_FILE
        from fpzo_ray.signing import verify

        if not (self.path / CONFIG_FILE).is_file() or not (self.path / RUN_ID_FILE).is_file():
            raise ConfigError(
                f"config error: --resume: {self.path} is not a run folder (no "
                f"{CONFIG_FILE} and {RUN_ID_FILE})"
            )
        verify(self.path, [CONFIG_FILE, RUN_ID_FILE, TRACKING_FILE])
        return config_from_dict(read_yaml(self.path / CONFIG_FILE))

    def resume_command(self) -> str:
        return shlex.join([sys.executable, "-m", "fpzo_ray.run", "--resume", self.location])


class RunFolderWriter(RunCallback):
    """The run folder as a callback: a checkpoint whenever the engine hands one over
    (``checkpoints``; a sweep trial's go through Tune instead), the results at the end."""

    def __init__(self, folder: RunFolder, checkpoints: bool = True) -> None:
        self.folder = folder
        self.checkpoints = checkpoints

    def after_round(self, metrics: dict[str, Any], state: dict[str, Any] | None) -> None:
        if state is not None and self.checkpoints:
            self.folder.save_checkpoint(state)

    def on_end(self, result: FederatedResult) -> None:
        self.folder.write_results(result)
