"""The MLflow dashboard, checked in a real browser: a finished study served by ``mlflow server``
on 127.0.0.1, driven in headless Chromium through Playwright. The experiment page lists the
parent run with its child runs; the parent's artifact view shows the Pareto figure and the
report. Screenshots go to ``$FPZO_TEST_ARTIFACTS/mlflow_ui`` (default ``test-artifacts/``).

Needs Chromium (Debian's ``chromium`` package; ``.ci/run`` installs it) and the ``playwright``
package (the test extra; it drives the installed Chromium, downloading no browser). Skipped,
saying why, where either is missing.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
from studies import free_port

ROOT = Path(__file__).resolve().parents[1]
SCREENSHOTS = Path(os.environ.get("FPZO_TEST_ARTIFACTS", ROOT / "test-artifacts")) / "mlflow_ui"
# Flags for a closed network (no background connections to Google's hosts), as root.
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


def _chromium() -> str:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        found = shutil.which(name)
        if found:
            return found
    pytest.skip(
        "no Chromium on this machine (apt-get install chromium): the MLflow UI "
        "browser test cannot run"
    )


@pytest.fixture(scope="module")
def mlflow_server(finished_study):
    """``mlflow server`` on the finished study's store, on a free local port."""
    port = free_port()
    log_path = finished_study.results / "mlflow_server.log"
    with open(log_path, "w") as log:
        server = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "mlflow",
                "server",
                "--backend-store-uri",
                finished_study.tracking_uri,
                "--host",
                "127.0.0.1",
                "--port",
                str(port),
                "--workers",
                "1",
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        url = f"http://127.0.0.1:{port}"
        deadline = time.time() + 120
        while True:
            try:
                with urllib.request.urlopen(f"{url}/health", timeout=2) as answer:
                    if answer.status == 200:
                        break
            except OSError:
                pass
            assert server.poll() is None, log_path.read_text()
            assert time.time() < deadline, "mlflow server did not come up in 120 s"
            time.sleep(0.5)
        yield url
        server.terminate()
        server.wait(timeout=30)


def test_the_report_command_reads_the_study_from_the_server(
    finished_study, mlflow_server, tmp_path
):
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "fpzo_ray.report",
            mlflow_server,
            "--run-id",
            finished_study.parent_run_id,
            "--out",
            str(tmp_path),
        ],
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert out.returncode == 0, out.stderr[-2000:]
    written = finished_study.experiment_dir / "report"
    assert (tmp_path / "report.html").read_bytes() == (written / "report.html").read_bytes()
    assert f"Logged to MLflow run {finished_study.parent_run_id}" in out.stdout


def test_the_dashboard_shows_the_study_its_runs_and_its_figures(finished_study, mlflow_server):
    browser_path = _chromium()
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        pytest.skip("the playwright package is not installed (pip install -e '.[test]')")
    from mlflow.tracking import MlflowClient

    from fpzo_ray.tracking import ui_command

    client = MlflowClient(finished_study.tracking_uri)
    experiment = client.get_experiment_by_name("study_e2e").experiment_id
    parent = client.get_run(finished_study.parent_run_id)
    children = client.search_runs([experiment], f"tags.mlflow.parentRunId = '{parent.info.run_id}'")
    assert len(children) == 8
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)

    kind = client.get_experiment(experiment).tags["mlflow.experimentKind"]
    assert kind == "custom_model_development"
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=browser_path, args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1600, "height": 1000})
        # The page a sweep tells its user to open is the experiment's runs table, not
        # MLflow's GenAI overview.
        printed = ui_command(finished_study.tracking_uri, experiment).split("then open ")[1]
        page.goto(printed.replace("http://127.0.0.1:5000", mlflow_server))
        page.get_by_text(parent.info.run_name, exact=True).wait_for(timeout=60_000)
        assert page.get_by_text(f"{len(children) + 1} matching runs").is_visible()
        page.screenshot(path=SCREENSHOTS / "experiment_landing.png")
        # The experiment's runs: the parent, and its children once expanded.
        page.goto(f"{mlflow_server}/#/experiments/{experiment}/runs")
        page.get_by_text(parent.info.run_name, exact=True).wait_for(timeout=60_000)
        assert page.get_by_text(f"{len(children) + 1} matching runs").is_visible()
        page.locator('button[data-component-id*="runnamecellrenderer"]').first.click()
        for child in children:
            page.get_by_text(child.info.run_name, exact=True).wait_for(timeout=30_000)
        page.screenshot(path=SCREENSHOTS / "experiment_runs.png")

        # The parent's artifacts: the Pareto figure, shown as an image...
        page.goto(f"{mlflow_server}/#/experiments/{experiment}/runs/{parent.info.run_id}/artifacts")
        page.get_by_text("report.html", exact=True).wait_for(timeout=60_000)
        page.get_by_text("figures", exact=True).click()
        page.get_by_text("pareto_accuracy_vs_client_flops.png", exact=True).click()
        preview = page.locator("img[src^='blob:']").first
        preview.wait_for(timeout=30_000)
        page.wait_for_function(
            "() => [...document.images].some(i => i.src.startsWith('blob:')"
            " && i.naturalWidth === 750 && i.naturalHeight === 450)",
            timeout=30_000,
        )
        page.screenshot(path=SCREENSHOTS / "parent_pareto_figure.png")

        # ...and the report, rendered in the artifact view's frame.
        page.get_by_text("report.html", exact=True).click()
        report = page.frame_locator("iframe").first
        heading = report.locator("h1")
        heading.wait_for(timeout=60_000)
        assert heading.inner_text() == "Sweep study"
        text = report.locator("body").inner_text()
        assert "method=dense" in text and "method=ntk_sap_50" in text
        # the four sweep figures (no heat map: one swept axis)
        assert report.locator("img[src^='data:image/png']").count() == 4
        page.screenshot(path=SCREENSHOTS / "parent_report.png")
        browser.close()
    names = ("experiment_landing.png", "experiment_runs.png", "parent_pareto_figure.png")
    for name in (*names, "parent_report.png"):
        assert (SCREENSHOTS / name).stat().st_size > 10_000
