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
