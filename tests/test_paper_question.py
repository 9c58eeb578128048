"""The focused study's sweep file (``sweeps/paper_question.yaml``) runs end to end at a smoke
scale (bundled digits, 2 rounds, one partition, 2 seeds), so that it cannot rot between the
long runs that publish its results (``docs/results/paper_question.md``)."""

from pathlib import Path

from mlflow.tracking import MlflowClient

from fpzo_ray.config import config_from_dict
from fpzo_ray.sweep.phases import run_sweep
from fpzo_ray.sweep.spec import load_sweep
from fpzo_ray.sweep.study.summary import compare_cells

STUDY = Path(__file__).resolve().parents[1] / "sweeps" / "paper_question.yaml"
SMOKE = [
    "data.name=digits",
    "training.rounds=2",
    "partition=dirichlet_1.0",
    "study.seeds=2",
]


def test_the_sweep_file_is_the_study_the_docs_describe():
    spec = load_sweep(STUDY)
    assert spec.kind == "study" and spec.phases == ("search", "repeat")
    assert spec.trial_count == 4 * 3 + 4 * 3  # 4 cells x (3 rates + 3 fresh seeds)
    for cell in spec.cells():
        cfg = config_from_dict(spec.run_config(cell, {}))
        assert cfg.data.name == "mnist" and cfg.training.rounds == 800
        assert cfg.zo.num_perturbations == 20 and cfg.training.clients_per_round == 10
        assert cfg.data.num_clients == 100 and cfg.data.partition == "dirichlet"
        assert cfg.pruning.sparsity in (0.0, 0.9)
    assert spec.search is not None and spec.search.metric == "val_accuracy"
    assert spec.search.scheduler is None  # searched at the full horizon


def test_the_study_runs_at_smoke_scale_every_trial_finished(ray_session, tmp_path, monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    spec = load_sweep(STUDY, SMOKE)
    results = tmp_path / "results"
    outcome = run_sweep(spec, results)
    assert not outcome.interrupted
    assert len(outcome.figures) == 2 * 3 + 2 * 2
    assert {f.status for f in outcome.figures} == {"OK"}
    assert all(f.rounds == 2 for f in outcome.figures)
    # each cell chose one of the grid's rates on validation, then ran it on 2 fresh seeds
    assert set(outcome.summary["chosen.training.server_lr"]) <= {0.003, 0.01, 0.03}
    repeats: dict[str, list] = {}
    for f in outcome.figures:
        if f.phase == "repeat":
            repeats.setdefault(f.cell, []).append(f)
            assert f.seed != 0  # fresh: never the search seed
    by_method = {c.coordinates["method"]: repeats[c.label] for c in spec.cells()}
    claim = compare_cells(by_method["ntk_sap_90"], by_method["dense_zo"])
    # two rounds are too few to read dense ZO at NTK-SAP's budget (no extrapolation): the
    # comparison itself is checked in tests/test_study_summary.py
    assert claim["equal_rounds"]["n"] == 2 and claim["equal_flops"]["flops_budget"] > 0
    client = MlflowClient(f"sqlite:///{results / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("paper_question")
    runs = client.search_runs([experiment.experiment_id], max_results=100)
    assert len(runs) == 1 + 10 and {r.info.status for r in runs} == {"FINISHED"}
    for name in ("accuracy_vs_round", "accuracy_vs_client_flops"):
        assert (outcome.experiment_dir / "report" / "figures" / f"{name}.png").is_file()
