"""Figures and reports onto MLflow runs: a run's figures when it ends, a sweep's report on
its parent run."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd

from fpzo_ray.artifacts import CLIENTS_FILE
from fpzo_ray.config import RunConfig
from fpzo_ray.report.document import FIGURES_DIR, ReportFiles
from fpzo_ray.report.plotting import save_figures
from fpzo_ray.report.run_figures import HISTORY_KEYS, device_budgets, run_figures
from fpzo_ray.report.sources import run_history, run_setup


def log_report(tracking_uri: str, run_id: str, files: ReportFiles) -> None:
    """``report.html`` and ``summary.md`` at the top of the run's artifacts, the figures
    under ``figures/``."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=tracking_uri)
    client.log_artifact(run_id, str(files.html))
    client.log_artifact(run_id, str(files.markdown))
    for path in files.figures:
        client.log_artifact(run_id, str(path), FIGURES_DIR)


def write_run_figures(client: Any, run_id: str, cfg: RunConfig, folder: Path) -> list[Path]:
    """The run's figures (``run_figures``) from what MLflow holds of it and its client
    records (``folder/clients.csv``), saved under ``folder/figures`` and logged to the run
    under ``figures/``."""
    history = run_history(client, run_id, HISTORY_KEYS)
    setup = run_setup(client.get_run(run_id).data.params)
    records = folder / CLIENTS_FILE
    clients = (
        pd.read_csv(records) if records.is_file() and records.stat().st_size else pd.DataFrame()
    )
    figures = run_figures(history, setup, clients, cfg, device_budgets(cfg))
    paths = save_figures(figures, folder / FIGURES_DIR)
    for path in paths:
        client.log_artifact(run_id, str(path), FIGURES_DIR)
    return paths
