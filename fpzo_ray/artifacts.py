"""The names of the files a run, a trial and a sweep write: one owner, which every writer and
every reader imports (a name changed here changes for both).

A run or trial folder holds :data:`CONFIG_FILE`, :data:`CLIENTS_FILE`, :data:`MODEL_FILE`,
checkpoints holding :data:`STATE_FILE`, and for a standalone run :data:`RUN_ID_FILE`. A
sweep's experiment folder holds :data:`SPEC_FILE`, :data:`TRACKING_FILE`,
:data:`PARENT_RUN_FILE`, :data:`SELECTION_FILE`, :data:`ENVIRONMENT_FILE`,
:data:`TIMING_FILE` and, where signing is on, :data:`SIGNATURES_FILE` in each folder it
signs; a trial that ended early (a scheduler, a run callback) holds :data:`STOPPED_MARKER`.
"""

from __future__ import annotations

#: The run's whole configuration (YAML).
CONFIG_FILE = "config.yaml"
#: One row per sampled client and round, and per client of a federated evaluation.
CLIENTS_FILE = "clients.csv"
#: The final global model, stored sparsely (``models.pruned``); also its artifact's name.
MODEL_FILE = "model.pt"
#: The server's state inside a checkpoint (``sim.checkpoint``).
STATE_FILE = "server_state.pt"
#: A standalone run's MLflow run id: a resumed run logs to the same run.
RUN_ID_FILE = "mlflow_run_id"

#: The resolved sweep spec, saved in the sweep's experiment folder.
SPEC_FILE = "fpzo_sweep.yaml"
#: The MLflow tracking URI the sweep logs to: a resumed sweep logs there too.
TRACKING_FILE = "mlflow_tracking_uri"
#: The sweep's parent MLflow run id.
PARENT_RUN_FILE = "mlflow_parent_run_id"
#: Each cell's configuration chosen by the search.
SELECTION_FILE = "selection.json"
#: The machine and versions the sweep ran on.
ENVIRONMENT_FILE = "environment.json"
#: The sweep's wall time per phase.
TIMING_FILE = "timing.json"
#: The signatures of the files Tune restores from (``signing``).
SIGNATURES_FILE = "fpzo_signatures.json"
#: A file in a trial's folder that says a scheduler stopped it early (not an interruption).
STOPPED_MARKER = "stopped_early"
