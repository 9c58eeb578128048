"""A finished study's report and figures, end to end: written by the sweep itself, logged to
MLflow, and written the same by ``python -m fpzo_ray.report`` from the experiment folder and
from the MLflow store."""

from __future__ import annotations

import io
import os
import subprocess
import sys
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
RUN_FIGURES = {
    f"figures/{name}.png"
    for name in (
        "accuracy_vs_round",
        "accuracy_vs_client_flops",
        "mask_layer_density",
        "client_memory_vs_budget",
        "participation",
    )
}
SWEEP_FIGURES = {
    "figures/pareto_accuracy_vs_client_flops.png",
    "figures/accuracy_vs_round.png",
    "figures/accuracy_vs_client_flops.png",
    "figures/accuracy_vs_upload.png",
}


def report_command(*args: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
    env["PYTHONPATH"] = str(ROOT)
    return subprocess.run(
        [sys.executable, "-m", "fpzo_ray.report", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )


def _png(data: bytes) -> tuple[int, int]:
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    image = Image.open(io.BytesIO(data))
    image.verify()
    return image.size


def test_a_study_ends_with_its_report_logged_to_the_parent_run(finished_study, tmp_path):
    folder = finished_study.experiment_dir / "report"
    html = (folder / "report.html").read_text()
    markdown = (folder / "summary.md").read_text()
    for cell in ("method=dense", "method=ntk_sap_50"):  # every cell, in both
        assert cell in html and cell in markdown
    assert "dense ZO" in html and "NTK-SAP 50 % + ZO" in html
    assert "95 % Student-t intervals" in html and "validation split (val_accuracy)" in html
    # self-contained: every figure inline
    assert html.count('src="data:image/png;base64,') == len(SWEEP_FIGURES)
    assert "torch" in html and "Software and machine" in html
    assert {p.name for p in (folder / "figures").iterdir()} == {Path(f).name for f in SWEEP_FIGURES}

    client = MlflowClient(finished_study.tracking_uri)
    parent = finished_study.parent_run_id
    logged = {a.path for a in client.list_artifacts(parent)}
    assert {"report.html", "summary.md", "environment.json", "sweep.yaml"} <= logged
    assert {a.path for a in client.list_artifacts(parent, "figures")} == SWEEP_FIGURES
    pareto = Path(
        client.download_artifacts(
            parent, "figures/pareto_accuracy_vs_client_flops.png", str(tmp_path)
        )
    )
    assert _png(pareto.read_bytes()) == (750, 450)
    assert client.get_run(parent).data.metrics["sweep_wall_s"] > 0


def test_every_trial_run_carries_its_figures(finished_study, tmp_path):
    client = MlflowClient(finished_study.tracking_uri)
    experiment = client.get_experiment_by_name("study_e2e")
    parent = finished_study.parent_run_id
    children = client.search_runs(
        [experiment.experiment_id], f"tags.mlflow.parentRunId = '{parent}'"
    )
    assert len(children) == 8
    for run in children:
        assert {a.path for a in client.list_artifacts(run.info.run_id, "figures")} == RUN_FIGURES
    one = children[0].info.run_id
    _png(
        Path(
            client.download_artifacts(one, "figures/participation.png", str(tmp_path))
        ).read_bytes()
    )


def test_the_report_command_writes_the_same_report_from_the_folder_and_from_mlflow(
    finished_study, tmp_path
):
    written = finished_study.experiment_dir / "report"
    from_folder = report_command(
        str(finished_study.experiment_dir), "--out", str(tmp_path / "folder"), "--no-log"
    )
    assert from_folder.returncode == 0, from_folder.stderr[-2000:]
    from_store = report_command(
        finished_study.tracking_uri,
        "--run-id",
        finished_study.parent_run_id,
        "--out",
        str(tmp_path / "store"),
        "--no-log",
    )
    assert from_store.returncode == 0, from_store.stderr[-2000:]
    by_name = report_command(
        finished_study.tracking_uri,
        "--experiment",
        "study_e2e",
        "--out",
        str(tmp_path / "by_name"),
        "--no-log",
    )
    assert by_name.returncode == 0, by_name.stderr[-2000:]
    for name in ("report.html", "summary.md", "figures/accuracy_vs_round.png"):
        expected = (written / name).read_bytes()
        for out in ("folder", "store", "by_name"):
            assert (tmp_path / out / name).read_bytes() == expected, (out, name)
    assert f"Report: {tmp_path / 'store' / 'report.html'}" in from_store.stdout


@pytest.mark.parametrize(
    "arguments, named",
    [
        (["/nonexistent/folder"], "SOURCE"),
        (["sqlite:////nonexistent/mlflow.db"], "--run-id or --experiment"),
        (["{tmp}"], "not a sweep's experiment folder"),
    ],
)
def test_a_bad_source_is_one_line(arguments, named, tmp_path):
    out = report_command(*[a.replace("{tmp}", str(tmp_path)) for a in arguments])
    assert out.returncode == 2, out.stderr
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("config error: ") and named in lines[0]


def test_the_figures_module_needs_no_ray_or_mlflow():
    """The figures are plain matplotlib over pandas: importing them starts nothing."""
    code = (
        "import sys; import fpzo_ray.report.run_figures, fpzo_ray.report.sweep_figures, "
        "fpzo_ray.report.document; print(sorted(m for m in ('ray', 'mlflow') "
        "if m in sys.modules))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        timeout=120,
    )
    assert out.stdout.strip() == "[]", out.stderr
