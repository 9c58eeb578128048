"""The validation split: held out of the training pool before partitioning, stratified, seeded."""

import numpy as np
import pytest
import torch

from fpzo_ray.config import config_from_dict
from fpzo_ray.data import federated_data, hold_out_validation, load_dataset, stratified_holdout
from fpzo_ray.data.validation import validation_subset
from fpzo_ray.models import bind_flat_buffer, build_model
from fpzo_ray.seeding import Purpose, derive_seed
from fpzo_ray.sim.evaluation import Evaluator, score
from fpzo_ray.sim.in_process import run_in_process


def test_validation_split_is_disjoint_from_every_client_and_from_the_test_set():
    cfg = config_from_dict({"data": {"num_clients": 20, "partition": "dirichlet", "alpha": 0.3}})
    raw = load_dataset(cfg.data)
    dataset, partition = federated_data(cfg, raw)
    # The very slice stratified_holdout draws from the run seed's stream.
    rng = np.random.default_rng(derive_seed(cfg.seed, Purpose.VALIDATION_SPLIT))
    kept, held_out = stratified_holdout(raw.train_labels, 0.1, rng)
    per_class = np.round(0.1 * np.bincount(raw.train_labels)).sum()  # 142 of 1,437 digits
    assert held_out.shape[0] == dataset.num_validation == per_class
    assert np.intersect1d(kept, held_out).size == 0
    assert np.array_equal(dataset.val_inputs, raw.train_inputs[held_out])
    assert np.array_equal(dataset.train_inputs, raw.train_inputs[kept])
    # Every remaining training sample is on exactly one client; the test split is untouched.
    assert np.array_equal(np.sort(np.concatenate(partition)), np.arange(kept.shape[0]))
    assert np.array_equal(dataset.test_inputs, raw.test_inputs)


def test_validation_split_is_stratified_and_a_function_of_the_seed():
    raw = load_dataset(config_from_dict({}).data)
    a = hold_out_validation(raw, 0.2, run_seed=5)
    b = hold_out_validation(raw, 0.2, run_seed=5)
    c = hold_out_validation(raw, 0.2, run_seed=6)
    assert np.array_equal(a.val_inputs, b.val_inputs) and np.array_equal(a.val_labels, b.val_labels)
    assert not np.array_equal(a.val_inputs, c.val_inputs)
    held = np.bincount(a.val_labels, minlength=10)
    total = np.bincount(raw.train_labels, minlength=10)
    assert np.array_equal(held, np.round(0.2 * total).astype(int))
    # Stable under everything but the seed: the partition does not move it.
    cfg = {"seed": 5, "data": {"validation_fraction": 0.2, "num_clients": 12}}
    other = {
        "seed": 5,
        "data": {"validation_fraction": 0.2, "num_clients": 30, "partition": "shards"},
    }
    first = federated_data(config_from_dict(cfg), raw)[0]
    second = federated_data(config_from_dict(other), raw)[0]
    assert np.array_equal(first.val_inputs, second.val_inputs)


def test_zero_fraction_holds_nothing_out():
    raw = load_dataset(config_from_dict({}).data)
    dataset, _ = federated_data(config_from_dict({"data": {"validation_fraction": 0.0}}), raw)
    assert dataset.num_validation == 0 and dataset.validation_set() is None
    assert dataset.num_train == raw.num_train


@pytest.mark.parametrize("fraction, expect_val", [(0.1, True), (0.0, False)])
def test_every_evaluation_reports_validation_beside_test_metrics(fraction, expect_val):
    cfg = config_from_dict(
        {
            "data": {"num_clients": 10, "validation_fraction": fraction},
            "pruning": {"sparsity": 0.0},
            "zo": {"num_perturbations": 2},
            "training": {"rounds": 3, "clients_per_round": 3, "eval_every": 2},
        }
    )
    metrics = run_in_process(cfg, *federated_data(cfg))
    evaluated = [m for m in metrics if "test_accuracy" in m]
    assert [m["round"] for m in evaluated] == [2, 3]
    for m in evaluated:
        assert ("val_accuracy" in m and "val_loss" in m) == expect_val
        if expect_val:
            assert 0.0 <= m["val_accuracy"] <= 1.0 and m["val_loss"] > 0
    assert all("val_accuracy" not in m for m in metrics if "test_accuracy" not in m)


def test_the_per_round_validation_sample_is_stratified_seeded_and_the_same_for_every_method():
    raw = load_dataset(config_from_dict({}).data)
    split = hold_out_validation(raw, 0.3, run_seed=5)
    labels = split.val_labels
    chosen = validation_subset(labels, 200, run_seed=5)
    assert np.array_equal(chosen, validation_subset(labels, 200, run_seed=5))
    assert not np.array_equal(chosen, validation_subset(labels, 200, run_seed=6))
    assert np.array_equal(chosen, np.unique(chosen))  # sorted, no repeats
    # every class keeps its share, rounded per class
    share = 200 / labels.shape[0]
    counts = np.bincount(labels[chosen], minlength=10)
    assert np.array_equal(counts, np.round(share * np.bincount(labels, minlength=10)))
    # a size covering the split takes all of it
    assert np.array_equal(validation_subset(labels, 10_000, 5), np.arange(labels.shape[0]))
    # targets that are not classes: a plain draw of the size asked
    values = np.linspace(0, 1, 100).astype(np.float32)
    assert validation_subset(values, 30, 5).shape == (30,)


@pytest.mark.parametrize("subset, fraction", [(50, 0.1), (0, 0.1), (50, 0.0)])
def test_every_round_scores_the_validation_sample_and_names_it(subset, fraction):
    """``val_subset_*`` every round (with a validation split and a sample size), the whole
    splits' ``val_*``/``test_*`` only every ``eval_every`` rounds and the last; the sample's
    figures are the model's on exactly the sample's indices."""
    cfg = config_from_dict(
        {
            "data": {"num_clients": 10, "validation_fraction": fraction},
            "pruning": {"sparsity": 0.0},
            "zo": {"num_perturbations": 2},
            "training": {
                "rounds": 5,
                "clients_per_round": 3,
                "eval_every": 2,
                "eval_subset": subset,
            },
        }
    )
    dataset, partition = federated_data(cfg)
    metrics = run_in_process(cfg, dataset, partition)
    expected = subset > 0 and fraction > 0
    for m in metrics:
        assert ("val_subset_accuracy" in m and "val_subset_loss" in m) == expected
        assert ("test_accuracy" in m) == (m["round"] in (2, 4, 5))
    if not expected:
        return
    # the sample is the seeded one, scored by the same model as the whole split
    evaluator = Evaluator(
        *_bound_model(cfg, dataset), dataset, torch.device("cpu"), subset_size=subset, seed=cfg.seed
    )
    chosen = validation_subset(dataset.val_labels, subset, cfg.seed)
    assert evaluator.subset is not None and evaluator.subset[1].shape[0] == chosen.shape[0]
    inputs, targets = dataset.validation_set()
    assert torch.equal(evaluator.subset[0], inputs[torch.from_numpy(chosen)])
    weights = evaluator.flat.detach().clone()
    whole = evaluator.evaluate(weights)
    sample = evaluator.evaluate_subset(weights)
    alone = score(evaluator.model, evaluator.task, *evaluator.subset, 256, torch.device("cpu"))
    assert sample == {f"val_subset_{k}": v for k, v in alone.items()}
    assert set(whole) == {"val_loss", "val_accuracy", "test_loss", "test_accuracy"}


def _bound_model(cfg, dataset):
    model = build_model(cfg, dataset.input_shape, dataset.num_classes, init_seed=1)
    flat, _ = bind_flat_buffer(model)
    return model, flat
