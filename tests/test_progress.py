"""The overall progress line of a running sweep."""

from types import SimpleNamespace

from fpzo_ray.sweep.progress import TrialProgress


def _plan(rounds: int) -> SimpleNamespace:
    return SimpleNamespace(run={"training": {"rounds": rounds}})


def _trial(status: str, rounds: int, done: int) -> SimpleNamespace:
    return SimpleNamespace(
        status=status,
        last_result={"round": done} if done else {},
        config={"trial": {"run": {"training": {"rounds": rounds}}}},
    )


def test_progress_counts_trials_and_rounds_and_estimates_the_time_left():
    lines = []
    progress = TrialProgress(
        started=0.0, phase="grid", plans=[_plan(100)] * 5, publish=lines.append
    )
    progress.phase_started = 0.0
    # at the start: nothing has run, no estimate yet
    start = progress.summary([_trial("RUNNING", 100, 0), _trial("RUNNING", 100, 0)], now=1.0)
    assert start == (
        "grid: 0/5 trials done, 2 running, 3 pending, 0 failed; 0/500 rounds; elapsed 0 min 01 s"
    )
    # 60 s in: one finished, one stopped early at 40 by the scheduler, one failed at 10,
    # one running at 50 (the fifth not created yet): 200 rounds ran, 350 will
    trials = [
        _trial("TERMINATED", 100, 100),
        _trial("TERMINATED", 100, 40),
        _trial("ERROR", 100, 10),
        _trial("RUNNING", 100, 50),
    ]
    line = progress.summary(trials, now=60.0)
    assert line.startswith(
        "grid: 2/5 trials done, 1 running, 1 pending, 1 failed; 200/350 rounds; elapsed 1 min 00 s"
    )
    assert line.endswith("about 0 min 45 s left")  # 150 rounds at 200 rounds a minute


def test_progress_lines_come_at_most_every_interval_and_are_published():
    lines = []
    progress = TrialProgress(
        started=0.0, phase="search", plans=[_plan(10)], publish=lines.append, every_s=3600.0
    )
    for _ in range(5):
        progress.on_step_end(0, [_trial("RUNNING", 10, 3)])
    assert len(lines) == 1 and lines[0].startswith("search: 0/1 trials done, 1 running")
