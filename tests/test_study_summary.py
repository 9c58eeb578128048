"""Statistics over seeds, selection on validation metrics only, and the per-cell summary."""

import math

import pandas as pd
import pytest

from fpzo_ray.sweep.study.statistics import (
    Estimate,
    paired_difference,
    seeds_to_separate,
    t_interval,
    value_at_budget,
)
from fpzo_ray.sweep.study.summary import (
    cell_summary,
    compare_cells,
    default_budgets,
    select,
    trial_figures,
)


def test_t_interval_matches_the_textbook_value():
    est = t_interval([0.80, 0.82, 0.84])
    # mean 0.82, s = 0.02, t(0.975, 2) = 4.302653
    assert est.mean == pytest.approx(0.82) and est.std == pytest.approx(0.02)
    assert est.ci95 == pytest.approx(4.302653 * 0.02 / math.sqrt(3), rel=1e-6)
    assert est.n == 3
    single = t_interval([0.5, float("nan")])
    assert single.mean == 0.5 and math.isnan(single.ci95) and single.n == 1
    assert math.isnan(t_interval([]).mean)


def test_paired_difference_uses_only_seeds_both_sides_have():
    a = {1: 0.9, 2: 0.8, 3: 0.85, 4: float("nan")}
    b = {1: 0.7, 2: 0.7, 3: 0.65, 5: 0.1}
    est = paired_difference(a, b)
    assert est.n == 3 and est.mean == pytest.approx((0.2 + 0.1 + 0.2) / 3)


def test_value_at_budget_interpolates_and_never_extrapolates():
    costs, values = [10, 20, 40], [0.1, 0.5, 0.9]
    assert value_at_budget(costs, values, 30) == pytest.approx(0.7)
    assert value_at_budget(costs, values, 20) == pytest.approx(0.5)
    assert value_at_budget(costs, values, 40) == pytest.approx(0.9)
    assert math.isnan(value_at_budget(costs, values, 5))
    assert math.isnan(value_at_budget(costs, values, 41))


def _history(rounds, val, test, flops_per_round=100.0, pruning=0.0):
    """Per-round results as Tune's dataframe holds them (evaluations every round here)."""
    rows = []
    for r, v, t in zip(rounds, val, test):
        row = {
            "round": r,
            "val_accuracy": v,
            "val_loss": 1 - v,
            "test_accuracy": t,
            "test_loss": 1 - t,
            "cumulative_client_flops": flops_per_round * r,
            "cumulative_upload_bytes": 10 * r,
            "max_client_peak_memory_bytes": 1000,
            "time_total_s": float(r),
        }
        if r == rounds[0]:
            row["setup/pruning_client_flops"] = pruning
            row["setup/kept_fraction"] = 0.5
        rows.append(row)
    return pd.DataFrame(rows)


def _trial(sample, val, test, cell="c", seed=0, planned=3, rounds=(1, 2, 3), phase="search", **kw):
    plan = {
        "cell": cell,
        "phase": phase,
        "sample": sample,
        "seed": seed,
        "hyperparameters": {"training.server_lr": 0.001 * (sample + 1)},
    }
    return trial_figures(plan, planned, _history(list(rounds), val, test, **kw))


def test_selection_reads_validation_metrics_and_never_test_ones():
    # Sample 1 has the best validation accuracy; sample 0 the best *test* accuracy by far.
    trials = [
        _trial(0, [0.2, 0.3, 0.4], [0.9, 0.95, 0.99]),
        _trial(1, [0.3, 0.5, 0.7], [0.1, 0.1, 0.1]),
        _trial(2, [0.2, 0.4, 0.6], [0.5, 0.5, 0.5]),
    ]
    chosen = select(trials, "val_accuracy", "max")["c"]
    assert chosen.sample == 1 and chosen.value == pytest.approx(0.7)
    # val_loss is minimised: the same trial.
    assert select(trials, "val_loss", "min")["c"].sample == 1
    # Poisoning every test figure changes nothing.
    for t in trials:
        t.evaluations["test_accuracy"] = [1.0, 1.0, 1.0] if t.sample == 2 else [0.0, 0.0, 0.0]
    assert select(trials, "val_accuracy", "max")["c"].sample == 1


def test_selection_scope_last_or_best_round_and_stopped_trials_only_as_a_fallback():
    peaked = _trial(0, [0.2, 0.9, 0.3], [0.0] * 3)  # best round 2, last 0.3
    steady = _trial(1, [0.4, 0.5, 0.6], [0.0] * 3)
    assert select([peaked, steady], "val_accuracy", "max", "last")["c"].sample == 1
    assert select([peaked, steady], "val_accuracy", "max", "best")["c"].sample == 0
    stopped = _trial(2, [0.95], [0.0], rounds=(1,))  # stopped early by the scheduler
    assert stopped.status == "STOPPED"
    assert select([stopped, steady], "val_accuracy", "max")["c"].sample == 1
    assert select([stopped], "val_accuracy", "max")["c"].sample == 2
    failed = trial_figures(
        {"cell": "c", "phase": "search", "sample": 3, "seed": 0}, 3, None, "RuntimeError: boom"
    )
    assert failed.status == "ERROR" and select([failed], "val_accuracy", "max") == {}
    tie = [_trial(4, [0.1, 0.2, 0.5], [0.0] * 3), _trial(3, [0.1, 0.2, 0.5], [0.0] * 3)]
    assert select(tie, "val_accuracy", "max")["c"].sample == 3


def test_cell_summary_reports_mean_interval_budgets_and_target():
    repeats = [
        _trial(0, [0.5, 0.6, 0.7], test, seed=s, phase="repeat", pruning=50.0)
        for s, test in ((1, [0.4, 0.6, 0.80]), (2, [0.4, 0.6, 0.82]), (3, [0.4, 0.7, 0.84]))
    ]
    budgets = default_budgets({"c": repeats})
    assert budgets == [87.5, 175.0, 350.0]  # fractions of 350 = 3 rounds x 100 + pruning
    row = cell_summary("c", {"method": "m"}, None, repeats, 3, budgets, 0.65, "val_accuracy")
    assert row["seeds"] == "3/3" and row["test_accuracy_mean"] == pytest.approx(0.82)
    assert row["test_accuracy_ci95"] == pytest.approx(4.302653 * 0.02 / math.sqrt(3), rel=1e-6)
    assert math.isnan(row["test_accuracy_at_87.5_flops_mean"])  # before the first evaluation
    assert row["test_accuracy_at_175_flops_mean"] == pytest.approx(
        (0.4 + 0.4 + 0.4) / 3 + 0.25 * (0.6 + 0.6 + 0.7 - 1.2) / 3
    )
    assert row["test_accuracy_at_350_flops_mean"] == pytest.approx(0.82)
    assert row["reached_target"] == "3/3" and row["rounds_to_target_mean"] == pytest.approx(8 / 3)
    assert row["client_flops_mean"] == 350.0 and row["peak_client_memory_bytes"] == 1000


def test_compare_cells_pairs_by_seed_at_equal_rounds_and_equal_flops():
    cheap = [
        _trial(0, [0.5] * 3, [0.5, 0.7, 0.9], seed=s, phase="repeat", flops_per_round=50.0)
        for s in (1, 2, 3)
    ]
    costly = [
        _trial(0, [0.5] * 3, [0.6, 0.7, 0.8 + 0.01 * s], seed=s, phase="repeat") for s in (1, 2, 3)
    ]
    claim = compare_cells(cheap, costly)
    assert claim["equal_rounds"]["mean"] == pytest.approx(0.9 - 0.82)
    assert claim["equal_flops"]["flops_budget"] == 150.0  # what the cheap cell spent
    # costly at 150 FLOPs: halfway between rounds 1 and 2 -> 0.65
    assert claim["equal_flops"]["mean"] == pytest.approx(0.9 - 0.65)
    assert claim["equal_flops"]["n"] == 3


def test_seeds_to_separate_is_the_first_count_whose_interval_excludes_zero():
    # spread 0.1, mean 0.05: t(0.975, n-1) * 0.1 / sqrt(n) < 0.05 first at n = 18
    # (n = 17: 2.1199 * 0.1 / 4.1231 = 0.0514; n = 18: 2.1098 * 0.1 / 4.2426 = 0.0497)
    assert seeds_to_separate(Estimate(0.05, 0.1, math.nan, 3)) == 18
    assert seeds_to_separate(Estimate(-0.05, 0.1, math.nan, 3)) == 18  # either sign
    assert seeds_to_separate(Estimate(0.0, 0.1, math.nan, 3)) is None  # nothing to separate
    assert seeds_to_separate(Estimate(0.05, math.nan, math.nan, 1)) is None  # no spread known
    assert seeds_to_separate(Estimate(1e-6, 0.1, math.nan, 3), most=50) is None


def test_a_trial_reads_a_metric_at_the_last_evaluation_by_a_round():
    trial = _trial(0, [0.2, 0.3, 0.4], [0.5, 0.6, 0.7], rounds=(10, 20, 30), planned=30)
    assert trial.at_round("test_accuracy", 25) == pytest.approx(0.6)
    assert trial.at_round("test_accuracy", 30) == pytest.approx(0.7)
    assert math.isnan(trial.at_round("test_accuracy", 5))
    assert math.isnan(trial.at_round("no_such_metric", 30))
