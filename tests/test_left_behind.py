"""A run and a sweep leave nothing of theirs behind: no file in the temp folder (Ray's
session folder included, a compiled kernel's copy neither), no process running, and no
warning about a choice the user never had to make."""

from __future__ import annotations

import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil
import pytest
import yaml
from studies import command_env

pytestmark = [pytest.mark.slow, pytest.mark.ray]

TINY = {
    "data": {"num_clients": 12},
    "pruning": {"method": "random", "sparsity": 0.5},
    "zo": {"num_perturbations": 2, "generator": "torch_cpu"},  # no kernel build in the back
    "training": {"rounds": 3, "clients_per_round": 2},
    "simulation": {"num_workers": 1},
    "tracking": {"experiment": "left_behind"},
}


def _still_running(marker: str) -> list[str]:
    """Processes whose command line names ``marker`` (Ray's name their session folder)."""
    found = []
    for process in psutil.process_iter(["cmdline"]):
        line = " ".join(process.info["cmdline"] or [])
        if marker in line:
            found.append(line[:200])
    return found


@pytest.mark.parametrize("module", ["fpzo_ray.run", "fpzo_ray.sweep"])
def test_nothing_is_left_in_the_temp_folder_or_running(tmp_path, module):
    temp = Path(tempfile.mkdtemp(prefix="lb", dir="/tmp"))  # short: Ray's socket paths
    try:
        if module == "fpzo_ray.run":
            (tmp_path / "run.yaml").write_text(yaml.safe_dump(TINY))
            arguments = ["--config", str(tmp_path / "run.yaml")]
        else:
            sweep = {"name": "left_behind", "base": TINY, "grid": {"seed": [0]}}
            (tmp_path / "sweep.yaml").write_text(yaml.safe_dump(sweep))
            arguments = [str(tmp_path / "sweep.yaml")]
        env = {**command_env(), "TMPDIR": str(temp)}
        # RAY_AUTH_MODE as a user who set nothing (``make`` sets it)
        for name in ("RAY_TMPDIR", "RAY_ADDRESS", "MLFLOW_TRACKING_URI", "RAY_AUTH_MODE"):
            env.pop(name, None)
        done = subprocess.run(
            [sys.executable, "-m", module, *arguments, "--results-dir", str(tmp_path / "r")],
            env=env,
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
        # nothing printed that the user caused nothing for: Ray's notice that it chose token
        # authentication itself
        assert "Token authentication" not in done.stdout + done.stderr
        for _ in range(50):  # processes killed at the exit may take a moment to go
            if not _still_running(str(temp)):
                break
            time.sleep(0.1)
        assert _still_running(str(temp)) == []
        assert sorted(p.name for p in temp.rglob("*")) == []
    finally:
        shutil.rmtree(temp, ignore_errors=True)
