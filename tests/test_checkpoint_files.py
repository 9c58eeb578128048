"""Checkpoint files that cannot be used, and what resuming does with them.

A real server state (a small run, two rounds) is written with ``save_server_state`` as the
older, good checkpoint; the newer one is then a bad file, or a state breaking one field of the
schema. Each is refused with one line naming the file (and the field), and ``newest_readable``
falls back to the good one. The last test goes through the command line: a finished run whose
newest checkpoint is replaced by a 12-byte file resumes from the one before and ends FINISHED.
"""

from __future__ import annotations

import copy
import json
import os
import subprocess
import sys
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch
import yaml

from fpzo_ray.artifacts import STATE_FILE
from fpzo_ray.config import config_from_dict
from fpzo_ray.data import make_partition
from fpzo_ray.sim.checkpoint import (
    CheckpointError,
    load_server_state,
    newest_readable,
    save_server_state,
)

ROOT = Path(__file__).resolve().parents[1]
RAW = {
    "data": {"num_clients": 12},
    "pruning": {"method": "random", "sparsity": 0.5},
    "zo": {"num_perturbations": 2},
    "training": {"rounds": 3, "clients_per_round": 4, "algorithm": "zo_momentum", "ema_decay": 0.9},
}
SYSTEM_FILE = next((Path(p) for p in ("/etc/passwd", "/etc/hosts") if Path(p).is_file()), None)


@pytest.fixture(scope="module")
def server(digits):
    """A real server after two rounds: a state with a sparse mask, Adam's moments, an EMA
    and the algorithm's momentum."""
    from fpzo_ray.sim.client import ClientRuntime
    from fpzo_ray.sim.in_process import InProcessPool
    from fpzo_ray.sim.server import FederatedServer

    cfg = config_from_dict(RAW)
    parts = make_partition(cfg.data, digits.train_labels, cfg.seed)
    server = FederatedServer(cfg, digits, InProcessPool(ClientRuntime(cfg, digits, parts)))
    server.prune()
    for r in range(2):
        server.run_round(r)
    return server


@pytest.fixture
def good(server) -> dict[str, Any]:
    """A fresh copy of the real state, for a test to spoil."""
    return copy.deepcopy(server.state_dict())


@pytest.fixture
def folders(tmp_path, good) -> tuple[Path, Path]:
    """(newer, older) checkpoint folders; the older holds the good state."""
    older, newer = tmp_path / "checkpoint_000001", tmp_path / "checkpoint_000002"
    save_server_state(good, older / STATE_FILE)
    newer.mkdir()
    return newer, older


def _refused_then_fallback(newer: Path, older: Path) -> str:
    """The one line that refuses ``newer``'s file; checks that resuming falls back to
    ``older``'s state and says so once."""
    path = newer / STATE_FILE
    with pytest.raises(CheckpointError) as err:
        load_server_state(path)
    line = str(err.value)
    assert "\n" not in line and line.startswith(f"checkpoint {path}"), line
    warnings: list[str] = []
    state = newest_readable([newer, older], warnings.append)
    assert state is not None and state["rounds_done"] == 2
    assert warnings == [f"{line}; trying an older checkpoint"]
    return line


def test_the_real_state_round_trips(folders, good):
    _, older = folders
    state = load_server_state(older / STATE_FILE, config_from_dict(RAW))
    assert state.keys() == good.keys() and state["rounds_done"] == 2
    assert torch.equal(state["optimizer"]["weights"], good["optimizer"]["weights"])
    assert int(state["mask"].sum()) < state["mask"].numel()  # really pruned
    assert state["algorithm"]["momentum"] is not None and state["optimizer"]["ema"] is not None


def _zip_of_garbage(path: Path, good_file: Path) -> None:
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("archive/data.pkl", b"\x80\x02garbage" * 8)
        archive.writestr("archive/version", b"3\n")


BAD_FILES: dict[str, tuple[Callable[[Path, Path], None], str]] = {
    # name: (writes the newer file, given the good one; what the line says). The text file
    # and the link to a system file are what the loader answers with KeyError / IndexError,
    # which once ended a resume with a traceback.
    "12-byte text file": (lambda p, g: p.write_bytes(b"hello world\n"), "cannot be read (KeyError"),
    "empty file": (lambda p, g: p.write_bytes(b""), "cannot be read (EOFError: an empty file)"),
    "truncated checkpoint": (
        lambda p, g: p.write_bytes(g.read_bytes()[: g.stat().st_size // 2]),
        "cannot be read (",
    ),
    "zip of garbage": (_zip_of_garbage, "cannot be read ("),
    "link to /dev/null": (lambda p, g: p.symlink_to("/dev/null"), ": not a regular file"),
    "a folder": (lambda p, g: p.mkdir(), ": not a regular file"),
    "no file": (lambda p, g: None, ": no such file"),
    "a list, not a state": (
        lambda p, g: torch.save([1, 2], p),
        ": does not hold a server state, got a list of 2",
    ),
}
if SYSTEM_FILE is not None:
    BAD_FILES[f"link to {SYSTEM_FILE}"] = (
        lambda p, g: p.symlink_to(SYSTEM_FILE),
        "cannot be read (",
    )


@pytest.mark.parametrize("case", list(BAD_FILES))
def test_a_bad_file_is_one_line_and_resuming_falls_back(case, folders):
    newer, older = folders
    write, said = BAD_FILES[case]
    write(newer / STATE_FILE, older / STATE_FILE)
    line = _refused_then_fallback(newer, older)
    assert said in line, line


def _set(path: str, value: Any) -> Callable[[dict], None]:
    """Spoils one field (``a.b`` is ``state["a"]["b"]``) by setting it to ``value``
    (a callable gets the field's old value)."""

    def spoil(state: dict) -> None:
        *parents, last = path.split(".")
        holder = state
        for key in parents:
            holder = holder[key]
        holder[last] = value(holder[last]) if callable(value) else value

    return spoil


def _drop(key: str) -> Callable[[dict], None]:
    return lambda state: state.pop(key)


def _second_group(state: dict) -> None:
    groups = state["optimizer"]["optimizer"]["param_groups"]
    groups.append({**groups[0], "params": [1]})


# name: (spoils the good state, the field named, what the line says after the field)
SCHEMA: dict[str, tuple[Callable[[dict], None], str, str]] = {
    "string round count": (
        _set("rounds_done", "20"),
        "rounds_done",
        "must be a non-negative integer, got str",
    ),
    "bool round count": (_set("rounds_done", True), "rounds_done", "got bool"),
    "negative round count": (
        _set("rounds_done", -1),
        "rounds_done",
        "must be a non-negative integer, got -1",
    ),
    "missing key": (_drop("totals"), "totals", "is missing"),
    "unexpected key": (_set("payload", 1), "payload", "is not part of a server state"),
    "mask of floats": (_set("mask", lambda m: m.float()), "mask", "must be a 1-D bool tensor"),
    "mask in 2-D": (_set("mask", lambda m: m.reshape(2, -1)), "mask", "got a bool tensor"),
    "string mask version": (_set("mask_version", "1"), "mask_version", "got str"),
    "non-finite weights": (
        _set("optimizer.weights", lambda w: w.index_fill(0, torch.tensor([3]), float("nan"))),
        "optimizer.weights",
        "must hold finite values, got 1 NaN or infinite",
    ),
    "integer weights": (
        _set("optimizer.weights", lambda w: w.long()),
        "optimizer.weights",
        "floating-point tensor, got an int64 tensor",
    ),
    "fewer weights than the mask keeps": (
        _set("optimizer.weights", lambda w: w[:10]),
        "optimizer.weights",
        "holds 10 values, fewer than the",
    ),
    "ema of another shape": (
        _set("optimizer.ema", lambda e: e[:-1]),
        "optimizer.ema",
        "must be a floating-point tensor of shape (",
    ),
    "infinite ema": (
        _set("optimizer.ema", lambda e: e.index_fill(0, torch.tensor([0]), float("inf"))),
        "optimizer.ema",
        "must hold finite values",
    ),
    "no optimizer": (_set("optimizer", None), "optimizer", "must be a dict, got NoneType"),
    "optimizer without param_groups": (
        lambda s: s["optimizer"]["optimizer"].pop("param_groups"),
        "optimizer.optimizer.param_groups",
        "is missing",
    ),
    "two parameter groups": (
        _second_group,
        "optimizer.optimizer.param_groups",
        "must be a list of one parameter group",
    ),
    "string learning rate": (
        lambda s: s["optimizer"]["optimizer"]["param_groups"][0].update(lr="0.01"),
        "optimizer.optimizer.param_groups[0].lr",
        "must be a non-negative number, got str",
    ),
    "Adam moment of another shape": (
        lambda s: s["optimizer"]["optimizer"]["state"][0].update(exp_avg=torch.zeros(5)),
        "optimizer.optimizer.state[0].exp_avg",
        "got a float32 tensor of shape (5,)",
    ),
    "algorithm state not a dict": (_set("algorithm", [1]), "algorithm", "must be a dict"),
    "algorithm state holding text in a list": (
        _set("algorithm", {"momentum": ["a"]}),
        "algorithm.momentum",
        "must be None, a number or a tensor",
    ),
    "string total": (
        _set("totals.cumulative_upload_bytes", "368"),
        "totals.cumulative_upload_bytes",
        "must be a finite number, got str",
    ),
    "infinite time to target": (
        _set("reached", {"time_to_target_s": float("inf")}),
        "reached.time_to_target_s",
        "must be a finite number, got inf",
    ),
    "client records not JSON": (
        _set("client_records", "[{'client': 1}]"),
        "client_records",
        "is not JSON (JSONDecodeError: Expecting property name",
    ),
    "client records as a JSON object": (
        _set("client_records", '{"client": 1}'),
        "client_records",
        "must be a JSON list, got dict",
    ),
    "client record not an object": (
        _set("client_records", lambda text: json.dumps([*json.loads(text), 7])),
        "client_records[8]",
        "must be a JSON object, got 7",
    ),
    "client records as objects": (_set("client_records", []), "client_records", "got a list"),
    "pruning summary without num_trained": (
        lambda s: s["pruning_summary"].pop("num_trained"),
        "pruning_summary.num_trained",
        "is missing",
    ),
    "pruning summary of another model": (
        _set("pruning_summary.num_prunable", 7),
        "pruning_summary.num_prunable",
        "is 7, but field 'mask' holds",
    ),
}


@pytest.mark.parametrize("case", list(SCHEMA))
def test_a_state_breaking_the_schema_names_the_field_and_falls_back(case, folders, good):
    newer, older = folders
    spoil, field, said = SCHEMA[case]
    spoil(good)
    save_server_state(good, newer / STATE_FILE)
    line = _refused_then_fallback(newer, older)
    assert line.startswith(f"checkpoint {newer / STATE_FILE}: field '{field}' "), line
    assert said in line, line


def test_a_checkpoint_past_the_runs_rounds_is_refused_when_they_are_known(folders):
    _, older = folders
    one_round = config_from_dict({**RAW, "training": {**RAW["training"], "rounds": 1}})
    with pytest.raises(CheckpointError, match=r"field 'rounds_done' is 2, past the run's 1 "):
        load_server_state(older / STATE_FILE, one_round)
    assert newest_readable([older], lambda _: None, one_round) is None
    assert load_server_state(older / STATE_FILE, config_from_dict(RAW))["rounds_done"] == 2


def test_another_runs_checkpoint_is_no_fallback(folders, good):
    """A valid checkpoint of another run (another seed), copied or linked into the run's
    folder, is refused naming the field, and the run's own older one is used."""
    newer, older = folders
    other = config_from_dict({**RAW, "seed": 1})
    save_server_state(good, newer / STATE_FILE)  # this run's, then another run's
    warnings: list[str] = []
    assert newest_readable([newer, older], warnings.append, other) is None
    assert all("field 'run_key' is another run's" in w for w in warnings) and len(warnings) == 2
    state = newest_readable([newer, older], warnings.append, config_from_dict(RAW))
    assert state is not None


def test_a_checkpoint_named_for_another_round_is_no_fallback(folders, good):
    newer, older = folders  # checkpoint_000002, checkpoint_000001; the state holds 2 rounds
    save_server_state(good, newer / STATE_FILE)
    warnings: list[str] = []
    state = newest_readable([newer, older], warnings.append, named_by_round=True)
    assert state is not None and state["rounds_done"] == 2  # the newer one, rightly named
    assert newest_readable([older], warnings.append, named_by_round=True) is None
    assert warnings == [
        f"checkpoint {older / STATE_FILE}: field 'rounds_done' is 2, but the checkpoint's "
        "name says 1; trying an older checkpoint"
    ]


def test_a_state_from_before_algorithms_had_state_still_loads(folders, good):
    newer, _ = folders
    del good["algorithm"]
    save_server_state(good, newer / STATE_FILE)
    assert "algorithm" not in load_server_state(newer / STATE_FILE)


def test_the_loaders_reason_is_kept_whole_on_one_line(folders, monkeypatch):
    newer, older = folders
    (newer / STATE_FILE).write_bytes(b"anything")
    reason = "a" * 130 + " the end of the first line\n\n  and a second line  "

    def fails(*args, **kwargs):
        raise RuntimeError(reason)

    monkeypatch.setattr(torch, "load", fails)
    with pytest.raises(CheckpointError) as err:
        load_server_state(newer / STATE_FILE)
    whole = "a" * 130 + " the end of the first line and a second line"
    assert (
        str(err.value) == f"checkpoint {newer / STATE_FILE} cannot be read (RuntimeError: {whole})"
    )


def test_the_server_refuses_a_state_of_another_model_before_changing_anything(server, good):
    """What the schema cannot see without the model: the mask's length and the number of
    trained weights it implies. The server's state stays as it was."""
    before = server.state_dict()
    longer = copy.deepcopy(good)
    longer["mask"] = torch.cat([good["mask"], torch.ones(4, dtype=torch.bool)])
    with pytest.raises(CheckpointError, match=r"^checkpoint field 'mask' has \d+ entries"):
        server.load_state_dict(longer)
    fewer = copy.deepcopy(good)
    fewer["mask"][torch.nonzero(fewer["mask"])[0]] = False  # one kept weight less
    with pytest.raises(CheckpointError, match=r"^checkpoint field 'optimizer.weights' holds"):
        server.load_state_dict(fewer)
    after = server.state_dict()
    assert torch.equal(after["mask"], before["mask"])
    assert torch.equal(after["optimizer"]["weights"], before["optimizer"]["weights"])
    assert after["client_records"] == before["client_records"]


@pytest.mark.slow
@pytest.mark.ray
def test_resume_after_the_newest_checkpoint_is_spoiled_falls_back_and_finishes(tmp_path):
    """``python -m fpzo_ray.run`` to the end (checkpoints after rounds 1-3, the newest two
    kept), then the newest replaced by a 12-byte file and ``clients.csv`` removed (so that
    the run counts as unfinished): ``--resume`` warns in one line, continues after round 2,
    exits 0, and its MLflow run ends FINISHED."""
    from mlflow.tracking import MlflowClient

    raw = {
        "data": {"num_clients": 12},
        "training": {"rounds": 4, "clients_per_round": 4, "eval_every": 2},
        "simulation": {
            "num_workers": 1,
            "worker_cpus": 0.4,
            "server_cpus": 0.1,
            "checkpoint_every": 1,
        },
        "tracking": {"experiment": "spoiled_checkpoint"},
    }
    config, results = tmp_path / "run.yaml", tmp_path / "results"
    config.write_text(yaml.safe_dump(raw))
    env = {k: v for k, v in os.environ.items() if k not in ("RAY_ADDRESS", "MLFLOW_TRACKING_URI")}
    env.update(PYTHONPATH=str(ROOT), RAY_USAGE_STATS_ENABLED="0")

    def run(*args: str) -> subprocess.CompletedProcess:
        done = subprocess.run(
            [sys.executable, "-m", "fpzo_ray.run", *args],
            env=env,
            capture_output=True,
            text=True,
            timeout=600,
        )
        assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
        assert "Traceback" not in done.stdout + done.stderr
        return done

    run("--config", str(config), "--results-dir", str(results))
    (folder,) = results.glob("runs/*")
    assert [p.name for p in sorted(folder.glob("checkpoint_*"))] == [
        "checkpoint_000002",
        "checkpoint_000003",
    ]
    spoiled = folder / "checkpoint_000003" / STATE_FILE
    spoiled.write_bytes(b"hello world\n")
    (folder / "clients.csv").unlink()

    resumed = run("--resume", str(folder))
    assert "Resuming after round 2 (MLflow has the rounds up to 4)" in resumed.stdout
    warnings = [ln for ln in resumed.stderr.splitlines() if ln.startswith("warning: ")]
    assert len(warnings) == 1, resumed.stderr[-3000:]
    assert warnings[0].startswith(f"warning: checkpoint {spoiled} cannot be read (KeyError")
    assert warnings[0].endswith("); trying an older checkpoint")
    assert (folder / "clients.csv").is_file()
    client = MlflowClient(f"sqlite:///{results / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("spoiled_checkpoint")
    (only,) = client.search_runs([experiment.experiment_id], run_view_type=3)
    assert only.info.status == "FINISHED"
