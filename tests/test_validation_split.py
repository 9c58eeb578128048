"""The validation split: held out of the training pool before partitioning, stratified, seeded."""

import numpy as np
import pytest

from fpzo_ray.config import config_from_dict
from fpzo_ray.data import federated_data, hold_out_validation, load_dataset, stratified_holdout
from fpzo_ray.seeding import Purpose, derive_seed
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
