"""``bench startup``'s pure parts (reading a run's lines, sampling a process tree) and what a
lean start needs: the run's modules import none of MLflow, matplotlib, pandas or Ray Tune
until a function uses them."""

from __future__ import annotations

import gc
import pickle
import subprocess
import sys
import textwrap

import pytest

from fpzo_ray.bench.startup import (
    Candidate,
    Launch,
    figures,
    first_round_end,
    launch,
    round_ends,
)

HEAVY = ("mlflow", "matplotlib", "pandas", "ray.tune")


def _imported_after(statement: str) -> list[str]:
    """The heavy modules a fresh interpreter holds after ``statement``."""
    done = subprocess.run(
        [
            sys.executable,
            "-c",
            f"{statement}; import sys; print([m for m in {HEAVY!r} if m in sys.modules])",
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    return eval(done.stdout.strip().splitlines()[-1])  # noqa: S307 - a list of str we printed


def test_the_run_command_imports_no_heavy_module_until_it_needs_one():
    assert _imported_after("import fpzo_ray.run") == []
    assert _imported_after("import fpzo_ray.tracking, fpzo_ray.sim.ray.ray_session") == []


def test_the_actors_module_imports_no_tracking_or_figures():
    """Every server and worker actor imports ``sim.ray.federation`` (where their classes live)."""
    assert _imported_after("import fpzo_ray.sim.ray.federation") == []


def test_the_run_command_never_imports_tune_and_the_sweep_callback_pickles_by_reference():
    script = textwrap.dedent(
        """
        import pickle, sys
        import fpzo_ray.run, fpzo_ray.tracking, fpzo_ray.lifecycle.recorder
        assert "ray.tune" not in sys.modules
        from ray.tune import Callback
        from fpzo_ray.sweep.callbacks import MLflowTrialCallback, TrialMirror
        assert issubclass(MLflowTrialCallback, Callback)
        assert issubclass(MLflowTrialCallback, TrialMirror)
        assert pickle.loads(pickle.dumps(MLflowTrialCallback)) is MLflowTrialCallback
        print("ok")
        """
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert done.stdout.strip() == "ok", done.stderr[-2000:]


def test_a_config_error_leaves_the_garbage_collector_as_it_was(capsys):
    from fpzo_ray.run import main

    assert gc.isenabled()
    try:
        assert main(["--set", "pruning.sparsity=1.5"]) == 2
        assert gc.isenabled()
    finally:
        gc.unfreeze()  # the start's objects, frozen by main: this process is a test session
    assert "pruning.sparsity" in capsys.readouterr().err


def test_round_lines_are_read_by_round_and_round_one_falls_back_to_the_setup_line():
    lines = [
        (0.5, "Run folder: /tmp/x"),
        (1.0, "Ray: started a local instance (2 CPUs)"),
        (4.0, "pruning: dense, kept fraction 1.000, 1898 trained coordinates"),
        (4.0, "round    1  client GFLOPs 0.13  (3 s)"),
        (4.5, "round    5  val accuracy 0.3  test accuracy 0.2  test loss 2.1  (4 s)"),
        (4.6, "round    5  printed twice: the first one counts"),
    ]
    assert round_ends(lines) == {1: 4.0, 5: 4.5}
    assert first_round_end(lines) == 4.0
    older = [line for line in lines if not line[1].startswith("round    1")]
    assert first_round_end(older) == 4.0  # a version printing no line for round 1
    assert first_round_end(lines[:2]) is None


def test_a_runs_figures_are_read_off_its_lines():
    done = Launch(
        ("python", "-m", "fpzo_ray.run"),
        ((1.0, "Ray: started"), (4.0, "round    1  x"), (6.0, "round    5  y")),
        exit_s=7.5,
        returncode=0,
        peak_pss=3 * 2**20,
        peak_processes=11,
    )
    run = Candidate("fpzo 2w", lambda p: [], {}, "fpzo", rounds=5)
    assert figures(run, done) == {
        "wall_s": 7.5,
        "peak_pss": 3 * 2**20,
        "peak_processes": 11,
        "start_s": 4.0,
        "teardown_s": 1.5,
        "ray_up_s": 1.0,
    }
    cut = Launch(done.command, done.lines[:2], 5.0, 0, 0, 1)
    with pytest.raises(RuntimeError, match="the last round's line not seen"):
        figures(run, cut)
    with pytest.raises(RuntimeError, match="exit code 1; its output ends:\nRay: started"):
        figures(run, Launch(done.command, done.lines, 5.0, 1, 0, 1))


def test_a_launch_times_its_lines_and_samples_its_whole_process_tree():
    script = textwrap.dedent(
        """
        import subprocess, sys
        child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(1.5)"])
        print("round 1 done", flush=True)
        child.wait()
        print("shut down", flush=True)
        """
    )
    done = launch([sys.executable, "-c", script], sample_every_s=0.1, timeout_s=60)
    assert done.returncode == 0
    assert [line for _, line in done.lines] == ["round 1 done", "shut down"]
    first, last = (at for at, _ in done.lines)
    assert 0 < first < last <= done.exit_s
    assert last - first >= 1.0  # the child's sleep: the lines are timed as they arrive
    assert done.peak_processes == 2  # the command and its child
    assert done.peak_pss > 10 * 2**20  # two Python interpreters


def test_a_launch_that_outlives_its_timeout_is_killed():
    with pytest.raises(RuntimeError, match="still running"):
        launch([sys.executable, "-c", "import time; time.sleep(30)"], timeout_s=1)


def test_a_tune_callback_pickled_in_this_process_round_trips():
    from fpzo_ray.sweep.callbacks import MLflowTrialCallback

    assert pickle.loads(pickle.dumps(MLflowTrialCallback)) is MLflowTrialCallback
