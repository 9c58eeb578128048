"""What drives a resumed run is signed by its writer and checked before it is read: an
unsigned or altered file, a crafted pickle of Tune's included, is one line naming it, and
nothing in it runs."""

from __future__ import annotations

import os
import pickle
import stat
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from fpzo_ray import signing
from fpzo_ray.config import ConfigError

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def key(tmp_path, monkeypatch) -> Path:
    path = tmp_path / "keys" / "signing.key"
    monkeypatch.setenv(signing.KEY_ENV, str(path))
    return path


def test_the_key_is_made_private_and_a_readable_one_is_refused(key):
    signing.signing_key()
    assert stat.S_IMODE(key.stat().st_mode) == 0o600
    key.chmod(0o644)
    with pytest.raises(ConfigError, match=r"may be read by others \(mode 644\); .*chmod 600"):
        signing.signing_key()


def test_a_signed_file_verifies_and_an_altered_or_unsigned_one_is_named(key, tmp_path):
    folder = tmp_path / "run"
    folder.mkdir()
    (folder / "config.yaml").write_text("seed: 1\n")
    signing.sign(folder, ["config.yaml", "missing.yaml"])  # a missing file is skipped
    signing.verify(folder, ["config.yaml"])
    (folder / "config.yaml").write_text("seed: 2\n")
    with pytest.raises(ConfigError) as changed:
        signing.verify(folder, ["config.yaml"])
    assert "config.yaml was changed since it was signed" in str(changed.value)
    assert "-m fpzo_ray.signing" in str(changed.value) and "\n" not in str(changed.value)
    (folder / "other.yaml").write_text("x")
    with pytest.raises(ConfigError, match="other.yaml is not signed"):
        signing.verify(folder, ["other.yaml"])


def test_the_last_few_versions_of_a_file_verify(key, tmp_path):
    """Tune rewrites its state while it runs; a stop between an upload and its signature
    leaves the previous version, which still verifies."""
    for version in range(signing.KEEP_VERSIONS + 1):
        (tmp_path / "state.json").write_text(str(version))
        signing.sign(tmp_path, ["state.json"])
    for version in range(1, signing.KEEP_VERSIONS + 1):
        (tmp_path / "state.json").write_text(str(version))
        signing.verify(tmp_path, ["state.json"])
    (tmp_path / "state.json").write_text("0")  # too old
    with pytest.raises(ConfigError):
        signing.verify(tmp_path, ["state.json"])


def test_another_users_key_does_not_verify(key, tmp_path, monkeypatch):
    (tmp_path / "config.yaml").write_text("seed: 1\n")
    signing.sign(tmp_path, ["config.yaml"])
    monkeypatch.setenv(signing.KEY_ENV, str(tmp_path / "other.key"))
    with pytest.raises(ConfigError, match="was changed since it was signed"):
        signing.verify(tmp_path, ["config.yaml"])


class _Payload:
    """Unpickling it creates a file: proof that the pickle ran."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


def _command(tmp_path: Path, *arguments: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k not in ("RAY_ADDRESS", "MLFLOW_TRACKING_URI")}
    env.update(PYTHONPATH=str(ROOT), RAY_TMPDIR=str(tmp_path / "ray"), RAY_USAGE_STATS_ENABLED="0")
    return subprocess.run(
        [sys.executable, "-m", *arguments, "--results-dir", str(tmp_path / "results")],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )


@pytest.mark.slow
def test_a_run_folder_whose_config_was_not_signed_is_refused_before_its_import(key, tmp_path):
    marker = tmp_path / "pwned"
    folder = tmp_path / "run"
    folder.mkdir()
    config = {"data": {"target": "os:system", "args": {"command": f"touch {marker}"}}}
    (folder / "config.yaml").write_text(yaml.safe_dump(config))
    (folder / "mlflow_run_id").write_text("0" * 32)
    out = _command(tmp_path, "fpzo_ray.run", "--resume", str(folder))
    assert out.returncode == 2, out.stderr[-2000:]
    (line,) = out.stderr.strip().splitlines()
    assert line.startswith("config error: --resume: ") and "config.yaml is not signed" in line
    assert not marker.exists() and not (tmp_path / "ray").exists()


@pytest.mark.slow
def test_a_crafted_tuner_pickle_is_refused_before_it_is_unpickled(key, tmp_path):
    """A sweep's experiment folder, its sweep file signed, with a ``tuner.pkl`` put there by
    someone else: ``--resume`` names it, and the pickle never runs."""
    from fpzo_ray.artifacts import SPEC_FILE

    marker = tmp_path / "pwned"
    experiment = tmp_path / "results" / "ray_results" / "crafted_20260101-000000"
    (experiment / "grid").mkdir(parents=True)
    sweep = {"name": "crafted", "base": {"training": {"rounds": 2}}, "grid": {"seed": [0]}}
    (experiment / SPEC_FILE).write_text(yaml.safe_dump(sweep))
    (experiment / "mlflow_tracking_uri").write_text(f"sqlite:///{tmp_path / 'mlflow.db'}")
    signing.sign(experiment, [SPEC_FILE, "mlflow_tracking_uri"])
    (experiment / "grid" / "tuner.pkl").write_bytes(pickle.dumps(_Payload(marker)))
    out = _command(tmp_path, "fpzo_ray.sweep", "--resume", str(experiment))
    assert out.returncode == 2, out.stderr[-2000:]
    (line,) = out.stderr.strip().splitlines()
    assert "grid/tuner.pkl is not signed" in line, line
    assert not marker.exists() and not (tmp_path / "ray").exists()


def test_an_experiment_state_cut_short_is_put_back_from_its_last_complete_copy(key, tmp_path):
    """Tune copies its state to the storage in place: a driver killed during the copy leaves
    it cut short. The last complete version, kept and signed beside it, is put back."""
    from fpzo_ray.storage import open_storage

    phase = open_storage(tmp_path)
    (tmp_path / "tuner.pkl").write_bytes(b"pickle")
    (tmp_path / "experiment_state-1.json").write_text('{"trial_data": []}')
    signing.sign_tune_state(phase)
    (tmp_path / "experiment_state-1.json").write_text('{"trial_data": [{"cut')  # killed
    signing.sign_tune_state(phase)  # a state being written is not signed
    signing.restore_intact_state(phase)
    assert (tmp_path / "experiment_state-1.json").read_text() == '{"trial_data": []}'
    signing.verify(phase, signing.state_files(phase))
    # whole, but written after its last signature (the driver killed in between)
    (tmp_path / "experiment_state-1.json").write_text('{"trial_data": [1]}')
    signing.restore_intact_state(phase)
    assert (tmp_path / "experiment_state-1.json").read_text() == '{"trial_data": []}'


def test_a_state_rewritten_after_the_last_snapshot_is_put_back_whole(key, tmp_path):
    """Tune saves its experiment state and its searcher's together; a driver killed before
    the next snapshot leaves both newer than their signatures (seen: a study killed as its
    repeats began could not be resumed). The whole snapshot is put back, and a state file
    the snapshot did not hold is set aside, not deleted."""
    from fpzo_ray.storage import open_storage

    phase = open_storage(tmp_path)
    searcher = tmp_path / "basic-variant-state-1.json"
    (tmp_path / "experiment_state-1.json").write_text('{"trial_data": []}')
    searcher.write_bytes(pickle.dumps({"variants": 1}))
    signing.sign_tune_state(phase)
    (tmp_path / "experiment_state-1.json").write_text('{"trial_data": [1]}')
    searcher.write_bytes(pickle.dumps({"variants": 2}))
    (tmp_path / "basic-variant-state-2.json").write_bytes(pickle.dumps({"session": 2}))
    signing.restore_intact_state(phase)
    assert (tmp_path / "experiment_state-1.json").read_text() == '{"trial_data": []}'
    assert pickle.loads(searcher.read_bytes()) == {"variants": 1}
    assert signing.state_files(phase) == ["basic-variant-state-1.json", "experiment_state-1.json"]
    assert (tmp_path / "basic-variant-state-2.json.unsigned").is_file()
    signing.verify(phase, signing.state_files(phase))
    # a folder whose state is signed as it is keeps it
    signing.sign_tune_state(phase)
    searcher.write_bytes(pickle.dumps({"variants": 3}))
    signing.sign_tune_state(phase)
    signing.restore_intact_state(phase)
    assert pickle.loads(searcher.read_bytes()) == {"variants": 3}


def test_tunes_other_state_files_are_signed_whatever_their_suffix(key, tmp_path):
    """Tune's searcher state is a pickle named ``.json``: signed as written, not parsed."""
    from fpzo_ray.storage import open_storage

    phase = open_storage(tmp_path)
    (tmp_path / "basic-variant-state-1.json").write_bytes(pickle.dumps({"a": 1}))
    signing.sign_tune_state(phase)
    signing.verify(phase, signing.state_files(phase))
