"""Sweep files: named axes, per-cell searches, studies, and the one-line errors of bad ones."""

import subprocess
import sys

import pytest
import yaml

from fpzo_ray.config import ConfigError, config_from_dict
from fpzo_ray.sweep.spec import load_saved_spec, load_sweep, parse_sweep, save_spec

BASE = {
    "data": {"num_clients": 12},
    "pruning": {"iterations": 2, "clients_per_iteration": 3},
    "training": {"rounds": 10, "clients_per_round": 4, "eval_every": 2},
}
METHODS = {
    "dense_zo": {"pruning": {"method": "dense"}},
    "ntk_sap_50": {"pruning": {"method": "ntk_sap", "sparsity": 0.5}},
    "bp": {
        "training": {
            "algorithm": "bp",
            "mode": "fedavg",
            "server_optimizer": "sgd",
            "server_lr": 1.0,
        },
        "search": {"training.client_lr": {"grid": [0.01, 0.1]}},
    },
}
STUDY = {
    "name": "s",
    "base": BASE,
    "grid": {"method": METHODS, "data.alpha": [0.1, 1.0]},
    "search": {"space": {"training.server_lr": {"loguniform": [0.001, 0.1]}}, "num_samples": 3},
    "study": {"seeds": 3},
}


def _load(tmp_path, spec, overrides=()):
    path = tmp_path / "sweep.yaml"
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    return load_sweep(path, overrides)


def test_cells_are_the_cross_product_of_named_and_field_axes(tmp_path):
    spec = _load(tmp_path, STUDY)
    cells = spec.cells()
    assert [c.label for c in cells][:2] == [
        "method=dense_zo,alpha=0.1",
        "method=dense_zo,alpha=1.0",
    ]
    assert len(cells) == 6 and spec.phases == ("search", "repeat")
    plans = spec.first_phase_plans()
    by_cell = {}
    for p in plans:
        by_cell.setdefault(p.cell, []).append(p)
    # ZO cells: 3 draws of the server learning rate; BP: its own grid, tried once.
    assert {len(v) for k, v in by_cell.items() if "bp" not in k} == {3}
    assert [p.hyperparameters for p in by_cell["method=bp,alpha=0.1"]] == [
        {"training.client_lr": 0.01},
        {"training.client_lr": 0.1},
    ]
    # Equal tuning effort: every ZO cell is offered the same candidates.
    offered = {
        k: [p.hyperparameters["training.server_lr"] for p in v]
        for k, v in by_cell.items()
        if "bp" not in k
    }
    assert len({tuple(v) for v in offered.values()}) == 1
    assert all(0.001 <= lr <= 0.1 for lr in offered["method=dense_zo,alpha=0.1"])
    cfg = config_from_dict(by_cell["method=ntk_sap_50,alpha=1.0"][0].run)
    assert (cfg.pruning.method, cfg.pruning.sparsity, cfg.data.alpha) == ("ntk_sap", 0.5, 1.0)
    assert (
        cfg.training.server_lr
        == by_cell["method=ntk_sap_50,alpha=1.0"][0].hyperparameters["training.server_lr"]
    )


def test_repeat_seeds_are_fresh_and_shared_by_every_cell(tmp_path):
    spec = _load(tmp_path, {**STUDY, "base": {**BASE, "seed": 7}})
    search_seeds = {p.seed for p in spec.first_phase_plans()}
    chosen = {c.label: (0, {}) for c in spec.cells()}
    repeats = spec.repeat_plans(chosen)
    assert search_seeds == {7}
    assert {p.seed for p in repeats} == {8, 9, 10}
    assert not search_seeds & {p.seed for p in repeats}
    assert all(config_from_dict(p.run).seed == p.seed for p in repeats)
    assert len(repeats) == 6 * 3


def test_search_draws_are_a_function_of_the_search_seed(tmp_path):
    a = [p.hyperparameters for p in _load(tmp_path, STUDY).first_phase_plans()]
    b = [p.hyperparameters for p in _load(tmp_path, STUDY).first_phase_plans()]
    other = {**STUDY, "search": {**STUDY["search"], "seed": 1}}
    c = [p.hyperparameters for p in _load(tmp_path, other).first_phase_plans()]
    assert a == b and a != c


def test_set_pins_axes_and_search_dimensions_and_wins_over_named_values(tmp_path):
    spec = _load(
        tmp_path,
        STUDY,
        ["training.server_lr=0.02", "data.alpha=0.5", "pruning.sparsity=0.8", "study.seeds=4"],
    )
    assert [c.label for c in spec.cells()] == ["method=dense_zo", "method=ntk_sap_50", "method=bp"]
    zo = [p for p in spec.first_phase_plans() if "bp" not in p.cell]
    assert len(zo) == 2 and all(p.hyperparameters == {} for p in zo)
    cfg = config_from_dict(zo[1].run)
    assert (cfg.training.server_lr, cfg.data.alpha, cfg.pruning.sparsity) == (0.02, 0.5, 0.8)
    assert spec.study.seeds == 4


def test_set_keeps_one_value_of_a_named_axis(tmp_path):
    spec = _load(tmp_path, STUDY, ["method=ntk_sap_50"])
    assert [c.label for c in spec.cells()] == [
        "method=ntk_sap_50,alpha=0.1",
        "method=ntk_sap_50,alpha=1.0",
    ]
    with pytest.raises(ConfigError, match=r"^config error: --set method: got 'ntk', the named"):
        _load(tmp_path, STUDY, ["method=ntk"])


def test_saved_spec_resumes_the_same_plans(tmp_path):
    spec = _load(tmp_path, STUDY, ["training.rounds=6"])
    save_spec(spec, tmp_path / "experiment")
    again = load_saved_spec(tmp_path / "experiment")
    assert again.first_phase_plans() == spec.first_phase_plans()


def test_a_study_without_a_search_repeats_every_cell(tmp_path):
    spec = _load(
        tmp_path, {"base": BASE, "grid": {"pruning.sparsity": [0.0, 0.5]}, "study": {"seeds": 2}}
    )
    assert spec.phases == ("repeat",) and spec.first_phase_plans() == []
    assert len(spec.repeat_plans({})) == 4


def _with(section, value):
    spec = {**STUDY, "search": dict(STUDY["search"]), "study": dict(STUDY["study"])}
    spec[section] = value
    return spec


@pytest.mark.parametrize(
    "spec, field",
    [
        (
            _with("search", {"space": {"training.server_lr": {"loguniform": [0.1, 0.01]}}}),
            "search.space.training.server_lr.loguniform",
        ),
        (
            _with("search", {"space": {"training.server_lr": {"loguniform": [0, 1]}}}),
            "search.space.training.server_lr.loguniform",
        ),
        (
            _with("search", {"space": {"training.server_lr": {"uniform": [-1, 1]}}}),
            "search.space.training.server_lr",
        ),
        (_with("search", {"space": {}}), "search.space"),
        (
            _with("search", {"space": {"training.serverlr": {"uniform": [0, 1]}}}),
            "search.space.training.serverlr",
        ),
        (
            _with("search", {"space": {"training.server_lr": {"normal": [0, 1]}}}),
            "search.space.training.server_lr",
        ),
        (
            _with("search", {"space": {"training.server_lr": {"choice": []}}}),
            "search.space.training.server_lr.choice",
        ),
        (_with("search", {"space": {"data.name": {"uniform": [0, 1]}}}), "search.space.data.name"),
        (
            _with("search", {"space": {"training.rounds": {"uniform": [1.5, 3]}}}),
            "search.space.training.rounds",
        ),
        (
            _with("search", {"space": {"zo.estimator": {"grid": ["forward", "backward"]}}}),
            "search.space.zo.estimator",
        ),
        (_with("search", {"num_samples": 0}), "search.num_samples"),
        (_with("search", {"metric": "test_accuracy"}), "search.metric"),
        (_with("search", {"metric": "val_accuracy", "mode": "min"}), "search.mode"),
        (_with("search", {"metric": "val_error_rate"}), "search.mode"),  # one's own: say which
        (_with("search", {"metric": "val_macro_f1", "mode": "max"}), "search.metric"),  # none
        (_with("search", {"scope": "final"}), "search.scope"),
        (_with("search", {"scheduler": {"type": "hyperband"}}), "search.scheduler.type"),
        (_with("search", {"scheduler": {"grace_period": 0}}), "search.scheduler.grace_period"),
        (
            _with("search", {"scheduler": {"reduction_factor": 1}}),
            "search.scheduler.reduction_factor",
        ),
        (_with("search", {"scheduler": {"grace_period": 500}}), "search.scheduler.grace_period"),
        (_with("search", {"bogus": 1}), "search.bogus"),
        (_with("search", {"rounds": 0}), "search.rounds"),
        (_with("search", {"rounds": 11}), "search.rounds"),  # the cells run 10
        ({**STUDY, "grid": {"method": {"a\nb": {}}}}, "grid.method"),
        (_with("study", {}), "study.seeds"),
        (_with("study", {"seeds": 1}), "study.seeds"),
        (_with("study", {"seeds": 3, "flops_budgets": [-1]}), "study.flops_budgets"),
        (_with("study", {"seeds": 3, "target_accuracy": 2}), "study.target_accuracy"),
        ({**STUDY, "grid": {"seed": [1, 2]}}, "grid.seed"),
        (
            {**STUDY, "base": {**BASE, "data": {"num_clients": 12, "validation_fraction": 0.0}}},
            "data.validation_fraction",
        ),
        (
            {**STUDY, "grid": {"method": {"x": {"pruning": {"sparsity": 1.5}}}}},
            "grid.method.x.pruning.sparsity",
        ),
        (
            {**STUDY, "grid": {"method": {"x": {"pruning": {"sparsty": 0.5}}}}},
            "grid.method.x.pruning.sparsty",
        ),
        ({"base": BASE, "grid": {"method": METHODS}}, "grid.method.bp.search"),
        ({**STUDY, "grid": {"data.alpha": []}}, "grid.data.alpha"),
        ({**STUDY, "grid": {"method": [1, 2]}}, "grid.method"),
        ({**STUDY, "grid": {"method": {}}}, "grid.method"),
        ({**STUDY, "bogus": 1}, "sweep.bogus"),
    ],
)
def test_bad_sections_stop_with_one_line_naming_the_field(tmp_path, spec, field):
    with pytest.raises(ConfigError) as err:
        _load(tmp_path, spec)
    message = str(err.value)
    assert message.startswith(f"config error: {field}") and "\n" not in message, message


def test_a_search_may_select_on_a_validation_metric_of_the_tasks_own(tmp_path):
    base = {**BASE, "task": {"metrics": ["accuracy", "extension_targets:error_rate"]}}
    search = {**STUDY["search"], "metric": "val_error_rate", "mode": "min"}
    spec = _load(tmp_path, {**STUDY, "base": base, "search": search})
    assert (spec.search.metric, spec.search.mode) == ("val_error_rate", "min")
    base = {**BASE, "task": {"metrics": "macro_f1"}}
    search = {**STUDY["search"], "metric": "val_macro_f1"}
    spec = _load(tmp_path, {**STUDY, "base": base, "search": search})
    assert (spec.search.metric, spec.search.mode) == ("val_macro_f1", "max")
    loss = _load(
        tmp_path, {**STUDY, "base": base, "search": {**STUDY["search"], "metric": "val_loss"}}
    )
    assert loss.search.mode == "min"


@pytest.mark.slow  # a subprocess
def test_sweep_cli_exits_2_on_a_bad_search_before_any_work(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(_with("search", {"metric": "test_accuracy"})))
    out = subprocess.run(
        [sys.executable, "-m", "fpzo_ray.sweep", str(path), "--results-dir", str(tmp_path / "r")],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 2
    assert out.stderr.strip().startswith("config error: search.metric: got 'test_accuracy'")
    assert "test metrics" in out.stderr and len(out.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "r").exists()


def test_a_named_axis_that_supplies_the_model_crossed_with_another_axis_resolves(tmp_path):
    """On the base alone the other axis's values do not resolve (a data.target needs a model
    named): the parent run's parameters read each value in a cell that holds it."""
    from fpzo_ray.sweep.phases import parent_params

    spec = _load(
        tmp_path,
        {
            "name": "own",
            "base": {**BASE, "data": {"target": "extension_targets:blobs", "num_clients": 6}},
            "grid": {
                "net": {
                    "narrow": {"model": {"target": "extension_targets:mlp", "args": {"hidden": 4}}},
                    "wide": {"model": {"target": "extension_targets:mlp", "args": {"hidden": 32}}},
                },
                "zo.num_perturbations": [2, 4],
            },
        },
    )
    params = parent_params(spec)
    assert params["model.target"] == "extension_targets:mlp"
    assert params["model.args.hidden"] == "varies: 4, 32"
    assert params["zo.num_perturbations"] == "varies: 2, 4"


def test_the_trial_count_counts_every_grid_candidate_and_a_cell_space_of_its_own():
    """``trial_count`` (what ``max_trials`` guards) is the number of trials the phases make."""
    raw = {
        "base": {"training": {"rounds": 4}},
        "grid": {
            "method": {
                "zo": {"pruning": {"method": "dense"}},
                "bp": {
                    "training": {"algorithm": "bp", "mode": "fedavg"},
                    "search": {"training.client_lr": {"grid": [0.01, 0.1]}},
                },
            },
            "data.alpha": [0.1, 1.0],
        },
        "search": {"space": {"training.server_lr": {"grid": [0.001, 0.01, 0.1]}}},
        "study": {"seeds": 2},
    }
    spec = parse_sweep(raw)
    # zo cells: 3 rates, bp cells: 2 rates, two alphas each; then 2 seeds per cell
    assert len(spec.first_phase_plans()) == 2 * 3 + 2 * 2
    assert spec.trial_count == 10 + 4 * 2
    without_own = parse_sweep({**raw, "grid": {"data.alpha": [0.1, 1.0, 10.0]}})
    assert without_own.trial_count == len(without_own.first_phase_plans()) + 3 * 2 == 15
