"""Hostile and mistaken input, through the real command lines: every case stops before any
work with exit 2 and one stderr line naming the field or file, no traceback, no Ray session
started and no MLflow store written."""

from __future__ import annotations

import os
import pickle
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
import torch
import yaml

from fpzo_ray.artifacts import STATE_FILE
from fpzo_ray.config import MAX_DEPTH, MAX_FILE_BYTES, ConfigError
from fpzo_ray.sim.checkpoint import (
    CheckpointError,
    load_server_state,
    newest_readable,
    save_server_state,
)
from fpzo_ray.sweep.spec import FULL_VALIDATION_LIMIT, load_sweep

pytestmark = pytest.mark.slow  # each case starts the command line in a subprocess

ROOT = Path(__file__).resolve().parents[1]
HUGE = "9" * 400  # an integer no field can hold
TINY_BASE = {"training": {"rounds": 2, "clients_per_round": 4}, "data": {"num_clients": 12}}


def _sweep(grid: dict, base: dict = TINY_BASE, **extra) -> str:
    return yaml.safe_dump({"name": "hostile", "base": base, "grid": grid, **extra})


def _nested(depth: int) -> str:
    return "a: " + "[" * depth + "]" * depth


def _alias_bomb() -> str:
    """The 342-byte "billion laughs": 9 anchors, each 9 aliases of the one before."""
    lines = ['a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]']
    for previous, name in zip("abcdefgh", "bcdefghi"):
        lines.append(f"{name}: &{name} [" + ",".join([f"*{previous}"] * 9) + "]")
    return "\n".join(lines) + "\n"


#: A file or folder name that is not UTF-8: ``b"\xff.yaml"`` as Python hands it over
#: (a lone surrogate); subprocess passes it on as those very bytes.
NOT_UTF8 = os.fsdecode(b"\xff.yaml")


# (command, arguments, {file name: content}, what the one line must name). In arguments,
# {tmp} is the test's folder; files are written there first.
CASES = {
    "400-digit int via --set (sweep)": (
        "sweep",
        ["--set", f"training.rounds={HUGE}"],
        {},
        "training.rounds",
    ),
    "400-digit seed via --set (sweep)": ("sweep", ["--set", f"seed={HUGE}"], {}, "seed"),
    "400-digit seed via --set (run)": ("run", ["--set", f"seed={HUGE}"], {}, "seed"),
    "400-digit int in a run config file": (
        "run",
        ["--config", "{tmp}/c.yaml"],
        {"c.yaml": f"training: {{rounds: {HUGE}}}"},
        "training.rounds",
    ),
    "400-digit int in a sweep file": (
        "sweep",
        ["{tmp}/s.yaml"],
        {"s.yaml": _sweep({"seed": [0]}, {"training": {"rounds": int(HUGE)}})},
        "training.rounds",
    ),
    "5000-digit int in a YAML file": (
        "run",
        ["--config", "{tmp}/c.yaml"],
        {"c.yaml": f"seed: {'7' * 5000}"},
        "c.yaml",
    ),
    "negative 400-digit float field": ("run", ["--set", f"zo.sigma=-{HUGE}"], {}, "zo.sigma"),
    "binary file as run config": (
        "run",
        ["--config", "{tmp}/c.yaml"],
        {"c.yaml": b"\x89PNG\r\n\x1a\n\xff\xfe\x00"},
        "c.yaml",
    ),
    "binary file as sweep": ("sweep", ["{tmp}/s.yaml"], {"s.yaml": b"\xff\xfe\x00\x01"}, "s.yaml"),
    "YAML nested 100,000 deep (run)": (
        "run",
        ["--config", "{tmp}/c.yaml"],
        {"c.yaml": _nested(100_000)},
        "c.yaml",
    ),
    "YAML nested 100,000 deep (sweep)": (
        "sweep",
        ["{tmp}/s.yaml"],
        {"s.yaml": _nested(100_000)},
        "s.yaml",
    ),
    "YAML nested just past the limit": (
        "run",
        ["--config", "{tmp}/c.yaml"],
        {"c.yaml": _nested(MAX_DEPTH + 1)},
        "c.yaml",
    ),
    "deep value via --set": ("run", ["--set", f"zo.sigma={'[' * 5000}"], {}, "zo.sigma"),
    "config file over the size limit": (
        "run",
        ["--config", "{tmp}/c.yaml"],
        {"c.yaml": "#" * (MAX_FILE_BYTES + 1)},
        "c.yaml",
    ),
    "config file holding a list": (
        "run",
        ["--config", "{tmp}/c.yaml"],
        {"c.yaml": "- 1\n"},
        "c.yaml",
    ),
    "missing config file": ("run", ["--config", "{tmp}/absent.yaml"], {}, "absent.yaml"),
    "results dir under a file (sweep)": (
        "sweep",
        ["--results-dir", "{tmp}/f/r"],
        {"f": "a file"},
        "--results-dir",
    ),
    "results dir under a file (run)": (
        "run",
        ["--results-dir", "{tmp}/f/r"],
        {"f": "a file"},
        "--results-dir",
    ),
    "results dir that cannot be created": (
        "sweep",
        ["--results-dir", "/proc/fpzo_results"],
        {},
        "--results-dir",
    ),
    "sigma infinite": ("sweep", ["--set", "zo.sigma=.inf"], {}, "zo.sigma"),
    "sigma NaN": ("run", ["--set", "zo.sigma=.nan"], {}, "zo.sigma"),
    "learning rate infinite in a grid": (
        "sweep",
        ["{tmp}/s.yaml"],
        {"s.yaml": _sweep({"training.server_lr": [0.1, float("inf")]})},
        "training.server_lr",
    ),
    "a grid of 10^6 trials": (
        "sweep",
        ["{tmp}/s.yaml"],
        {"s.yaml": _sweep({"seed": list(range(1000)), "data.num_clients": list(range(8, 1008))})},
        "max_trials",
    ),
    "a grid of 10^9 trials": (
        "sweep",
        ["{tmp}/s.yaml"],
        {
            "s.yaml": _sweep(
                {
                    "seed": list(range(1000)),
                    "data.num_clients": list(range(8, 1008)),
                    "zo.num_perturbations": list(range(1, 1001)),
                }
            )
        },
        "max_trials",
    ),
    "a search of 10^5 samples": (
        "sweep",
        ["{tmp}/s.yaml"],
        {
            "s.yaml": _sweep(
                {"seed": [0]},
                search={
                    "num_samples": 100_000,
                    "space": {"training.server_lr": {"loguniform": [1e-3, 1]}},
                },
            )
        },
        "max_trials",
    ),
    "worker needs more CPUs than any node (sweep)": (
        "sweep",
        ["--set", "simulation.worker_cpus=1000"],
        {},
        "simulation.worker_cpus",
    ),
    "worker needs more CPUs than any node (run)": (
        "run",
        ["--set", "simulation.worker_cpus=1000"],
        {},
        "simulation.worker_cpus",
    ),
    "worker needs more GPUs than any node": (
        "run",
        ["--set", "simulation.worker_gpus=64", "--set", "simulation.device=cuda"],
        {},
        "simulation.",
    ),
    "server needs more CPUs than any node": (
        "sweep",
        ["--set", "simulation.server_cpus=512"],
        {},
        "simulation.server_cpus",
    ),
    "empty sweep file": ("sweep", ["{tmp}/s.yaml"], {"s.yaml": "# nothing here\n"}, "s.yaml"),
    "missing sweep file": ("sweep", ["{tmp}/absent.yaml"], {}, "absent.yaml"),
    "missing device profiles file": (
        "run",
        ["--set", "devices.enabled=true", "--set", "devices.profiles_file={tmp}/p.yaml"],
        {},
        "devices.profiles_file",
    ),
    "binary device profiles file": (
        "sweep",
        ["--set", "devices.enabled=true", "--set", "devices.profiles_file={tmp}/p.yaml"],
        {"p.yaml": b"\xff\x00\xfe"},
        "devices.profiles_file",
    ),
    "unknown field": ("run", ["--set", "zo.sigmaa=0.001"], {}, "zo.sigmaa"),
    # a target's module that prints and calls sys.exit(0) at import: one line, never exit 0
    "sys.exit(0) in a target module": (
        "run",
        ["--set", "model.target=tests.exits_at_import:model"],
        {},
        "importing tests.exits_at_import called sys.exit(0)",
    ),
    "zero perturbations": (
        "sweep",
        ["--set", "zo.num_perturbations=0"],
        {},
        "zo.num_perturbations",
    ),
    # a step no device finishes within the round's limit: refused before work, not hours later
    "a billion perturbations": (
        "run",
        ["--set", "zo.num_perturbations=1000000000"],
        {},
        "zo.num_perturbations: 1000000000 directions for 5 client(s) a worker",
    ),
    "sparsity above 1": ("run", ["--set", "pruning.sparsity=1.5"], {}, "pruning.sparsity"),
    "malformed YAML via --set": ("run", ["--set", "training.rounds=[1, 2"], {}, "training.rounds"),
    "resume a folder that is no sweep": ("sweep", ["--resume", "{tmp}"], {}, "--resume"),
    "resume a folder that is no run": ("run", ["--resume", "{tmp}"], {}, "--resume"),
    # a resumed run or sweep keeps its configuration: what would change it is refused
    "resume a run with --set": ("run", ["--resume", "{tmp}", "--set", "seed=1"], {}, "--set"),
    "resume a run with --config": (
        "run",
        ["--resume", "{tmp}", "--config", "{tmp}/c.yaml"],
        {"c.yaml": "seed: 1"},
        "--config",
    ),
    "resume a sweep with a sweep file": (
        "sweep",
        ["sweeps/quick.yaml", "--resume", "{tmp}"],
        {},
        "sweep file",
    ),
    "unknown sweep key": (
        "sweep",
        ["{tmp}/s.yaml"],
        {"s.yaml": _sweep({"seed": [0]}, bogus=1)},
        "bogus",
    ),
    "YAML alias bomb as a run config": (
        "run",
        ["--config", "{tmp}/c.yaml"],
        {"c.yaml": _alias_bomb()},
        "c.yaml: holds more than",
    ),
    "YAML alias bomb as a sweep file": (
        "sweep",
        ["{tmp}/s.yaml"],
        {"s.yaml": _alias_bomb()},
        "s.yaml: holds more than",
    ),
    "recursive YAML alias": (
        "run",
        ["--config", "{tmp}/c.yaml"],
        {"c.yaml": "training: &t {rounds: [*t]}\n"},
        "c.yaml: recursive alias *t (line 1)",
    ),
    "duplicate key in a run config": (
        "run",
        ["--config", "{tmp}/c.yaml"],
        {"c.yaml": "training:\n  rounds: 5\n  rounds: 7\n"},
        "c.yaml: duplicate key 'rounds' (line 3)",
    ),
    "duplicate key in a sweep file": (
        "sweep",
        ["{tmp}/s.yaml"],
        {"s.yaml": "name: a\ngrid: {seed: [0]}\nname: b\n"},
        "s.yaml: duplicate key 'name' (line 3)",
    ),
    "duplicate key in a --set value": (
        "sweep",
        ["--set", "training={rounds: 5, rounds: 7}"],
        {},
        "--set training: duplicate key 'rounds' (line 1)",
    ),
    "config path not UTF-8": (
        "run",
        ["--config", f"{{tmp}}/{NOT_UTF8}"],
        {NOT_UTF8: "seed: 1\n"},
        "--config: the path is not valid UTF-8",
    ),
    "sweep path not UTF-8": (
        "sweep",
        [f"{{tmp}}/{NOT_UTF8}"],
        {NOT_UTF8: _sweep({"seed": [0]})},
        "sweep file: the path is not valid UTF-8",
    ),
    "results dir not UTF-8 (run)": (
        "run",
        ["--results-dir", f"{{tmp}}/{NOT_UTF8}"],
        {},
        "--results-dir: the path is not valid UTF-8",
    ),
    "results dir not UTF-8 (sweep)": (
        "sweep",
        ["--results-dir", f"{{tmp}}/{NOT_UTF8}"],
        {},
        "--results-dir: the path is not valid UTF-8",
    ),
    "resume folder not UTF-8 (run)": (
        "run",
        ["--resume", f"{{tmp}}/{NOT_UTF8}"],
        {},
        "--resume: the path is not valid UTF-8",
    ),
    "resume folder not UTF-8 (sweep)": (
        "sweep",
        ["--resume", f"{{tmp}}/{NOT_UTF8}"],
        {},
        "--resume: the path is not valid UTF-8",
    ),
    "sweep name of 300 characters": (
        "sweep",
        ["{tmp}/s.yaml"],
        {"s.yaml": _sweep({"seed": [0]}, name="n" * 300)},
        "config error: name: ",
    ),
    "sweep name of 300 characters via --set": (
        "sweep",
        ["--set", f"name={'n' * 300}"],
        {},
        "config error: name: ",
    ),
    "sweep name of 100 non-ASCII letters (300 bytes)": (
        "sweep",
        ["{tmp}/s.yaml"],
        {"s.yaml": _sweep({"seed": [0]}, name="\u540d" * 100)},
        "config error: name: ",
    ),
    "MLflow experiment of 5000 characters (run)": (
        "run",
        ["--set", f"tracking.experiment={'e' * 5000}"],
        {},
        "tracking.experiment",
    ),
    "MLflow experiment of 5000 characters (sweep)": (
        "sweep",
        ["--set", f"tracking.experiment={'e' * 5000}"],
        {},
        "tracking.experiment",
    ),
    # without a GPU: the cluster (this machine) has none; with one: no GPU share reserved
    "cuda without a GPU (run)": (
        "run",
        ["--set", "simulation.device=cuda"],
        {},
        "simulation.device",
    ),
    "cuda without a GPU (sweep)": (
        "sweep",
        ["--set", "simulation.device=cuda"],
        {},
        "simulation.device",
    ),
    "give up after a negative time": (
        "sweep",
        ["--give-up-after", "-1"],
        {},
        "--give-up-after",
    ),
    "give up after NaN seconds": ("sweep", ["--give-up-after", "nan"], {}, "--give-up-after"),
    "give up after infinite seconds": ("sweep", ["--give-up-after", "inf"], {}, "--give-up-after"),
    "give up after no number": ("sweep", ["--give-up-after", "soon"], {}, "--give-up-after"),
    "storage pyarrow cannot open (sweep)": ("sweep", ["--storage", "nosuch://b"], {}, "--storage"),
    "storage pyarrow cannot open (run)": ("run", ["--storage", "nosuch://b/p"], {}, "--storage"),
    "storage that cannot be written (run)": ("run", ["--storage", "/proc/fpzo"], {}, "--storage"),
    "storage beside --resume (sweep)": (
        "sweep",
        ["--resume", "{tmp}", "--storage", "{tmp}/elsewhere"],
        {},
        "--storage",
    ),
    "storage of a sweep file that is no path (sweep)": (
        "sweep",
        ["{tmp}/s.yaml"],
        {"s.yaml": _sweep({"seed": [1]}, storage=["a", "list"])},
        "storage",
    ),
}


@pytest.mark.parametrize("case", list(CASES))
def test_hostile_input_is_one_line_before_any_work(case, tmp_path):
    _refused_before_any_work(tmp_path, *CASES[case])


#: A tracking URI that cannot work: refused before Ray starts (no store, no run).
TRACKING_CASES = {
    "unknown scheme": ("bogus://host/path", "its scheme 'bogus' is none MLflow stores runs in"),
    "database that does not answer": (
        "postgresql://user:secret@127.0.0.1:1/mlflow",
        "no database server accepts a connection at 127.0.0.1:1",
    ),
}


@pytest.mark.parametrize("case", list(TRACKING_CASES))
def test_a_tracking_uri_that_cannot_work_is_one_line_before_ray(case, tmp_path):
    uri, said = TRACKING_CASES[case]
    _refused_before_any_work(tmp_path, "run", [], {}, said, {"MLFLOW_TRACKING_URI": uri})


def test_a_target_that_hangs_in_the_preflight_is_one_line_at_its_time_limit(tmp_path):
    target = "tests.hanging_targets:model"
    # long enough for the data set to load on a busy machine, then the model hangs past it
    said = f"model.target: {target} did not finish within 15 s (FPZO_PREFLIGHT_TIMEOUT_S)"
    arguments = ["--set", f"model.target={target}"]
    limit = {"FPZO_PREFLIGHT_TIMEOUT_S": "15"}
    _refused_before_any_work(tmp_path, "run", arguments, {}, said, limit)


def test_a_temp_folder_too_long_for_rays_sockets_is_one_line_before_ray(tmp_path):
    long = f"/tmp/{'x' * 60}"  # never made: refused first
    said = "RAY_TMPDIR: " + long + " is 65 bytes long"
    _refused_before_any_work(tmp_path, "run", [], {}, said, {"RAY_TMPDIR": long})


@pytest.mark.parametrize("command", ["run", "sweep"])
def test_a_full_results_disk_is_one_line_before_any_work(command, tmp_path):
    """The results folder on a disk with 2 MB left (a tmpfs of its own, mounted in a private
    mount namespace): one line naming --results-dir, exit 2, before Ray or MLflow."""
    from cluster_nodes import namespaces_unavailable

    if why := namespaces_unavailable():
        pytest.skip(f"no small disk of its own: {why}")
    disk = tmp_path / "disk"
    disk.mkdir()
    script = (
        f"mount -t tmpfs -o size=2m fpzo_full {disk} && cd {ROOT} && "
        f"exec {sys.executable} -m fpzo_ray.{command} --results-dir {disk}/results"
    )
    done = subprocess.run(
        ["unshare", "--mount", "--propagation", "private", "--", "sh", "-c", script],
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        capture_output=True,
        text=True,
        timeout=120,
    )
    lines = done.stderr.strip().splitlines()
    assert done.returncode == 2 and len(lines) == 1, done.stderr[-2000:]
    assert lines[0].startswith(f"config error: --results-dir: {disk}/results: "), lines[0]
    assert "MB free on its disk, less than the 50 MB a run needs at least" in lines[0]
    assert "Ray" not in done.stdout


def test_an_address_where_something_else_than_ray_answers_is_one_line(tmp_path):
    """An HTTP server at the address accepts the connection but gives no gRPC handshake,
    as Ray's GCS would: refused within seconds, before Ray is joined."""
    import http.server
    import threading

    server = http.server.ThreadingHTTPServer(("0.0.0.0", 0), http.server.BaseHTTPRequestHandler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        address = f"127.0.0.1:{server.server_address[1]}"
        said = "something other than a Ray cluster answers at"
        _refused_before_any_work(tmp_path, "run", ["--address", address], {}, said)
    finally:
        server.shutdown()
        server.server_close()


def _refused_before_any_work(
    tmp_path: Path,
    command: str,
    arguments: list[str],
    files: dict[str, str | bytes],
    named: str,
    extra_env: dict[str, str] | None = None,
) -> None:
    for name, content in files.items():
        path = tmp_path / name
        if isinstance(content, bytes):
            path.write_bytes(content)
        else:
            path.write_text(content)
    arguments = [a.replace("{tmp}", str(tmp_path)) for a in arguments]
    if "--results-dir" not in arguments:
        arguments += ["--results-dir", str(tmp_path / "results")]
    # Ray's temp folder, were it started: short enough for its socket paths (as a user's)
    ray_parent = Path(tempfile.mkdtemp(prefix="h", dir="/tmp"))
    ray_tmp = ray_parent / "ray"
    env = {k: v for k, v in os.environ.items() if k not in ("RAY_ADDRESS", "MLFLOW_TRACKING_URI")}
    env.update(RAY_TMPDIR=str(ray_tmp), PYTHONPATH=str(ROOT), RAY_USAGE_STATS_ENABLED="0")
    env.update(extra_env or {})
    try:
        out = subprocess.run(
            [sys.executable, "-m", f"fpzo_ray.{command}", *arguments],
            env=env,
            capture_output=True,
            text=True,
            timeout=300,
        )
        started = ray_tmp.exists()
    finally:
        shutil.rmtree(ray_parent, ignore_errors=True)
    lines = out.stderr.strip().splitlines()
    assert out.returncode == 2, out.stderr[-2000:]
    assert len(lines) == 1 and lines[0].startswith("config error: "), out.stderr[-2000:]
    assert named in lines[0], lines[0]
    assert len(lines[0]) < 400  # a hostile value is shown cut short, not echoed whole
    assert "Traceback" not in out.stderr + out.stdout
    assert "printed at import" not in out.stderr + out.stdout
    assert not started  # no Ray session was started
    assert not list(tmp_path.rglob("mlflow.db")) and not (tmp_path / "results").exists()


@pytest.mark.parametrize(
    "nodes, settings, named",
    [
        ([{"CPU": 8.0, "GPU": 0.0}], {"device": "cuda", "worker_gpus": 0.5}, "simulation.device"),
        ([{"CPU": 8.0}, {"CPU": 8.0}], {"device": "cuda"}, "simulation.device"),
        ([{"CPU": 2.0}, {"CPU": 8.0, "GPU": 4.0}], {"device": "cuda"}, "simulation.worker_gpus"),
        ([{"CPU": 2.0}, {"CPU": 8.0, "GPU": 4.0}], {"device": "cuda", "worker_gpus": 0.5}, None),
        ([{"CPU": 8.0}], {"device": "cpu"}, None),
        # two workers at half a GPU fill one GPU: the server's share needs a second one,
        # unless the server stays on the CPU
        (
            [{"CPU": 8.0, "GPU": 1.0}],
            {"device": "cuda", "worker_gpus": 0.5, "num_workers": 2},
            "simulation.num_workers",
        ),
        (
            [{"CPU": 8.0, "GPU": 2.0}],
            {"device": "cuda", "worker_gpus": 0.5, "num_workers": 2},
            None,
        ),
        (
            [{"CPU": 8.0, "GPU": 1.0}],
            {"device": "cuda", "worker_gpus": 0.5, "num_workers": 2, "server_gpus": 0},
            None,
        ),
    ],
)
def test_cuda_needs_gpus_in_the_cluster_reserved_by_the_workers(nodes, settings, named):
    """What counts is the cluster's nodes, not the driver's machine: a GPU-less head node
    with GPU workers runs cuda, provided the workers (and the server, unless it stays on the
    CPU) reserve GPU shares that fit."""
    from fpzo_ray.config import config_from_dict
    from fpzo_ray.sweep.resources import check_resources

    cfg = config_from_dict({"simulation": settings})
    if named is None:
        check_resources([cfg], nodes=nodes)
        return
    with pytest.raises(ConfigError) as err:
        check_resources([cfg], nodes=nodes)
    assert str(err.value).startswith(f"config error: {named}: ")


def test_validation_of_a_huge_sweep_is_linear_in_its_axes(tmp_path):
    """Allowed explicitly, a 10^6-trial grid is validated axis value by axis value (2,000
    configurations, not 10^6), and a bad value is still named."""
    grid = {"seed": list(range(1000)), "data.num_clients": list(range(16, 1016))}
    path = tmp_path / "s.yaml"
    path.write_text(_sweep(grid, max_trials=10**6))
    spec = load_sweep(path)
    assert spec.trial_count == 10**6 > FULL_VALIDATION_LIMIT
    assert len(spec.validated_configs()) == 1000 + 1000 + 2
    grid["data.num_clients"][500] = -1
    path.write_text(_sweep(grid, max_trials=10**6))
    with pytest.raises(ConfigError, match="data.num_clients"):
        load_sweep(path)


class _WritesAFile:
    """Unpickling this would write a file: what a crafted checkpoint does."""

    def __init__(self, target: Path) -> None:
        self.target = target

    def __reduce__(self):
        return (exec, (f"open({str(self.target)!r}, 'w').write('pwned')",))


def test_a_crafted_checkpoint_is_refused_without_running_its_code(tmp_path):
    target = tmp_path / "pwned"
    crafted = tmp_path / "checkpoint_000002" / STATE_FILE
    crafted.parent.mkdir()
    torch.save({"rounds_done": 20, "payload": _WritesAFile(target)}, crafted)
    with pytest.raises(CheckpointError) as err:
        load_server_state(crafted)
    assert str(crafted) in str(err.value) and "\n" not in str(err.value)
    assert not target.exists()
    with open(crafted, "rb") as f:  # it really is armed: plain pickle would run it
        assert f.read(2) == b"PK"  # a torch zip archive
    pickle.loads(pickle.dumps(_WritesAFile(target)))
    assert target.exists()


def _small_state(rounds_done: int) -> dict:
    """The smallest server state the checkpoint schema accepts (``sim.checkpoint``): two
    prunable weights, one kept, plus one always-trained coordinate."""
    from fpzo_ray.optim.server import ServerOptimizer

    return {
        "rounds_done": rounds_done,
        "mask": torch.tensor([True, False]),
        "mask_version": 1,
        "optimizer": ServerOptimizer(torch.ones(2), "sgd", 0.1).state_dict(),
        "totals": {},
        "reached": {},
        "client_records": "[]",
        "pruning_summary": {
            "pruning_method": "random",
            "kept_fraction": 0.5,
            "num_trained": 2,
            "num_prunable": 2,
        },
    }


def test_an_unreadable_newest_checkpoint_falls_back_to_the_previous(tmp_path):
    """More bad files and every schema case: ``tests/test_checkpoint_files.py``."""
    older, newer = tmp_path / "checkpoint_000001", tmp_path / "checkpoint_000002"
    save_server_state(_small_state(10), older / STATE_FILE)
    save_server_state(_small_state(20), newer / STATE_FILE)
    (newer / STATE_FILE).write_bytes((newer / STATE_FILE).read_bytes()[:100])  # truncated
    warnings: list[str] = []
    state = newest_readable([newer, older], warnings.append)
    assert state["rounds_done"] == 10
    assert len(warnings) == 1 and str(newer / STATE_FILE) in warnings[0]
    assert "\n" not in warnings[0]
    assert newest_readable([newer], warnings.append) is None


def test_an_error_after_the_start_is_one_line_with_its_cause_and_the_way_back(tmp_path):
    import sqlite3

    from fpzo_ray.failure import ERROR_LOG, stopped_on_error

    try:
        try:
            raise sqlite3.OperationalError("database or disk is full")
        except sqlite3.OperationalError as inner:
            raise RuntimeError("(raised as a result of autoflush)\nmany lines") from inner
    except RuntimeError as exc:
        stopped = stopped_on_error(exc, tmp_path, "python -m fpzo_ray.run --resume X")
    first, saved, resume = str(stopped).splitlines()
    # the innermost cause, and where it was raised when that was outside the package and
    # its libraries (here: this file, standing for a researcher's code)
    assert first.startswith("error: OperationalError: database or disk is full (raised in ")
    assert f"{Path(__file__).name}:" in first
    assert str(tmp_path / ERROR_LOG) in saved and resume.strip().endswith("--resume X")
    assert "many lines" in (tmp_path / ERROR_LOG).read_text()  # the whole traceback is kept
