"""Benchmarks as data: ``python -m fpzo_ray.bench NAME`` saves its result with the machine,
commit and date, and ``docs/benchmarks.md`` is generated from the saved results."""

from __future__ import annotations

import json
import sys
import types

from fpzo_ray.bench import pages
from fpzo_ray.bench.__main__ import BENCHMARKS, main


def test_the_committed_benchmark_page_is_the_generated_one():
    assert pages.PAGE.read_text() == pages.page(), "run: python -m fpzo_ray.bench.pages"


def test_a_bench_saves_its_result_with_machine_commit_and_date(tmp_path, monkeypatch, capsys):
    fake = types.ModuleType("fake_bench")
    fake.__doc__ = "fake: a bench of two numbers."
    fake.add_arguments = lambda parser: parser.add_argument("--repeats", type=int, default=3)
    fake.run = lambda args: {"speedup": 2.5, "speedup_spread": [2.1, 2.9], "n": args.repeats}
    monkeypatch.setitem(sys.modules, "fake_bench", fake)
    monkeypatch.setitem(BENCHMARKS, "fake", "fake_bench")
    path = tmp_path / "fake.json"
    assert main(["fake", "--repeats", "5", "--save", str(path)]) == 0
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1])["n"] == 5
    saved = json.loads(path.read_text())
    assert saved["bench"] == "fake" and saved["options"] == {"repeats": 5}
    assert saved["results"] == {"speedup": 2.5, "speedup_spread": [2.1, 2.9], "n": 5}
    assert saved["command"] == f"python -m fpzo_ray.bench fake --repeats 5 --save {path}"
    assert len(saved["commit"]["id"]) == 40 and isinstance(saved["commit"]["dirty"], bool)
    assert saved["machine"]["cores"] >= 1 and saved["machine"]["torch"]
    assert saved["date"][:2] == "20"


def test_a_section_shows_spreads_verdicts_and_rows_as_tables(monkeypatch):
    saved = {
        "command": "python -m fpzo_ray.bench sigma",
        "date": "2026-12-07T10:00:00+00:00",
        "commit": {"id": "0123456789abcdef", "dirty": True},
        "machine": {
            "cpu": "CPU X",
            "cores": 2,
            "memory_gib": 24.0,
            "gpu": None,
            "python": "3.11.2",
            "torch": "2.9.0",
        },
        "results": {
            "ratio": 1.23456,
            "ratio_spread": [1.1, 1.3],
            "ratio_verdict": "met",
            "nested": {"peak_mib": 12},
            "rows": [{"mode": "loop", "ms": 3.0}, {"mode": "batched", "ms": 1.5, "note": "x"}],
        },
    }
    text = pages.section("sigma", saved)
    assert "commit 0123456789 (with uncommitted changes); CPU X, 2 cores, 24.0 GiB" in text
    assert "| `ratio` | 1.235 | 1.1, 1.3 | met |" in text
    assert "| `nested.peak_mib` | 12 |  |  |" in text
    assert "| mode | ms | note |" in text and "| batched | 1.5 | x |" in text
    assert "No saved result yet" in pages.section("sigma", None)


def test_the_study_page_calls_a_difference_only_when_its_interval_excludes_zero():
    from fpzo_ray.bench.study_page import overall, verdict

    def side(mean, ci95, seeds=None):
        return {"mean": mean, "ci95": ci95, "n": 3, "seeds_to_separate": seeds}

    assert verdict(side(0.07, 0.02)).startswith("NTK-SAP ahead by +7.0 +- 2.0 points")
    assert "consistent with the paper's +6.35" in verdict(side(0.07, 0.02))
    assert "short of the paper's" in verdict(side(0.02, 0.01))
    assert verdict(side(-0.05, 0.01)).startswith("NTK-SAP behind by -5.0 +- 1.0 points")
    assert verdict(side(0.01, 0.05, seeds=40)) == (
        "not separable: +1.0 +- 5.0 points, the interval includes 0 (the paper's +6.35 lies "
        "above it); at this spread about 40 paired seeds would separate a difference this size"
    )
    assert "(so does the paper's +6.35)" in verdict(side(0.03, 0.05))
    assert "no interval" in verdict(side(0.01, None))

    def claim(*sides):
        return {f"p{i}": {"equal_rounds": s} for i, s in enumerate(sides)}

    assert overall(claim(side(0.07, 0.02), side(0.03, 0.01))).startswith("reproduced")
    assert overall(claim(side(0.07, 0.02), side(-0.03, 0.01))).startswith("contradicted")
    assert overall(claim(side(0.07, 0.02), side(0.01, 0.05))).startswith("not separable")
    assert overall(claim(side(0.01, 0.02), side(-0.01, 0.03))) == (
        "not separable at this scale: no partition shows a difference at equal rounds; a gain "
        "as large as the paper's +6.35 lies above every partition's interval"
    )


def test_the_committed_study_page_is_the_generated_one():
    from fpzo_ray.bench import study_page

    assert study_page.PAGE.read_text() == study_page.page(), (
        "run: python -m fpzo_ray.bench.study_page"
    )
    for name in ("accuracy_vs_round", "accuracy_vs_client_flops"):
        assert (study_page.PAGE.parent / study_page.FIGURES / f"{name}.png").is_file()
