"""The researcher's task (``task.loss``, ``task.metrics``): the named losses per sample, a
loss and a metric of one's own, and runs of a regression and a multi-label task, BP and
BP-free, that learn and report what their task defines."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from fpzo_ray.config import ConfigError, config_from_dict, merge
from fpzo_ray.data import federated_data, load_dataset
from fpzo_ray.data.partition import make_partition
from fpzo_ray.preflight import preflight
from fpzo_ray.sim.in_process import run_in_process
from fpzo_ray.task import IGNORE_INDEX, NAMED_LOSSES, accuracy_counts, build_task

T = "extension_targets"


def test_the_named_losses_give_one_value_per_sample():
    torch.manual_seed(0)
    logits, classes = torch.randn(4, 3), torch.tensor([0, 2, 1, 2])
    torch.testing.assert_close(
        NAMED_LOSSES["cross_entropy"](logits, classes),
        F.cross_entropy(logits, classes, reduction="none"),
    )
    # a regression model's (N, 1) against targets (N,): no broadcast to (N, N)
    outputs, real = torch.randn(4, 1), torch.randn(4)
    torch.testing.assert_close(NAMED_LOSSES["mse"](outputs, real), (outputs[:, 0] - real) ** 2)
    multi = torch.tensor([[1.0, 0.0, 1.0]] * 4)
    bce = F.binary_cross_entropy_with_logits(logits, multi, reduction="none").mean(1)
    torch.testing.assert_close(NAMED_LOSSES["bce_with_logits"](logits, multi), bce)


def test_token_cross_entropy_averages_each_sequences_tokens_and_skips_padding():
    torch.manual_seed(0)
    logits = torch.randn(3, 4, 5)  # 3 sequences of 4 tokens, a vocabulary of 5
    tokens = torch.tensor([[1, 2, 3, 4], [0, 1, IGNORE_INDEX, IGNORE_INDEX], [IGNORE_INDEX] * 4])
    losses = NAMED_LOSSES["token_cross_entropy"](logits, tokens)
    assert losses.shape == (3,)
    torch.testing.assert_close(losses[0], F.cross_entropy(logits[0], tokens[0]))
    torch.testing.assert_close(losses[1], F.cross_entropy(logits[1, :2], tokens[1, :2]))
    assert losses[2] == 0.0  # padding only: nothing to learn, nothing NaN
    correct, counted = accuracy_counts(logits, tokens)
    assert counted == 6  # the padded positions are not scored


def test_accuracy_reads_the_shape_of_the_task():
    logits = torch.tensor([[2.0, -1.0], [0.5, 1.0], [-3.0, 2.0]])
    assert accuracy_counts(logits, torch.tensor([0, 0, 1])) == (2, 3)  # arg-max per sample
    multi = torch.tensor([[1.0, 0.0], [0.0, 1.0], [0.0, 1.0]])
    assert accuracy_counts(logits, multi) == (5, 6)  # one sign per label
    with pytest.raises(ValueError, match="do not score targets"):
        accuracy_counts(logits, torch.zeros(3, 3))


def test_a_loss_of_ones_own_gets_reduction_none_where_it_takes_it():
    task = build_task("torch.nn.functional:smooth_l1_loss", "auto")
    outputs, targets = torch.randn(4, 2), torch.randn(4, 2)
    expected = F.smooth_l1_loss(outputs, targets, reduction="none").mean(1)
    torch.testing.assert_close(task.loss(outputs, targets), expected)
    assert task.metrics == {}  # auto: no accuracy for a loss of one's own


REGRESSION = {
    "data": {"target": f"{T}:linear_regression", "num_clients": 8},
    "model": {"target": f"{T}:mlp"},
    "pruning": {"clients_per_iteration": 4},
    "task": {"loss": "mse"},
    "training": {"rounds": 30, "clients_per_round": 4, "eval_every": 10},
}
BP = {"algorithm": "bp", "mode": "fedavg", "local_steps": 5, "client_lr": 0.05}
BP_SERVER = {"server_optimizer": "sgd", "server_lr": 1.0}


@pytest.mark.parametrize("algorithm", ["bp", "zo"])
def test_a_regression_task_learns_and_reports_its_loss(algorithm):
    training = {**BP, **BP_SERVER} if algorithm == "bp" else {"server_lr": 0.02}
    cfg = config_from_dict(merge(REGRESSION, {"training": training}))
    dataset, partition = federated_data(cfg)
    assert dataset.num_classes == 1 and not dataset.has_class_labels
    baseline = float(torch.from_numpy(dataset.test_labels).pow(2).mean())  # predicting 0
    metrics = run_in_process(cfg, dataset, partition)
    assert "test_accuracy" not in metrics[-1] and "val_loss" in metrics[-1]
    # the targets' variance is about 5: the model explains most of it
    assert metrics[-1]["test_loss"] < (0.2 if algorithm == "bp" else 0.8) * baseline


def test_a_multi_label_task_learns_each_labels_sign():
    cfg = config_from_dict(
        {
            "data": {"target": f"{T}:multi_label", "num_clients": 8},
            "model": {"target": f"{T}:mlp"},
            "pruning": {"clients_per_iteration": 4},
            "task": {"loss": "bce_with_logits"},
            "training": {"rounds": 20, "clients_per_round": 4, "eval_every": 10, **BP, **BP_SERVER},
        }
    )
    dataset, partition = federated_data(cfg)
    assert dataset.num_classes == 3
    metrics = run_in_process(cfg, dataset, partition)
    assert metrics[-1]["test_accuracy"] > 0.75  # per label: chance is 0.5


def test_a_metric_of_ones_own_is_reported_for_both_splits():
    cfg = config_from_dict(
        {
            "data": {"target": f"{T}:blobs", "num_clients": 6},
            "model": {"target": f"{T}:mlp"},
            "pruning": {"clients_per_iteration": 3},
            "task": {"metrics": ["accuracy", f"{T}:error_rate"]},
            "training": {"rounds": 4, "clients_per_round": 3, "eval_every": 2},
        }
    )
    metrics = run_in_process(cfg, *federated_data(cfg))
    for split in ("val", "test"):
        last = metrics[-1]
        assert last[f"{split}_error_rate"] == pytest.approx(1 - last[f"{split}_accuracy"])
    assert "test_error_rate" not in metrics[0]  # only where the model is evaluated


@pytest.mark.parametrize(
    "change, message",
    [
        ({"task": {"loss": "cross_entropy"}}, "task.loss: cross_entropy needs integer class"),
        ({"task": {"loss": "token_cross_entropy"}}, "task.loss: token_cross_entropy: .*on outputs"),
        ({"task": {"loss": f"{T}:summed_squares"}}, "task.loss: .*one value per sample"),
        ({"task": {"metrics": f"{T}:verdict"}}, "task.metrics: verdict: .*could not convert"),
        ({"task": {"metrics": f"{T}:nope"}}, "task.metrics: .*has no attribute 'nope'"),
        ({"task": {"metrics": "accuracy,f1"}}, "task.metrics: got 'f1'"),
        ({"task": {"metrics": f"accuracy,{T}:accuracy"}}, "task.metrics: .* names two metrics"),
        ({"training": {"target_accuracy": 0.9}}, "training.target_accuracy: the task reports"),
    ],
)
def test_a_task_that_does_not_fit_is_one_line_before_any_work(change, message):
    """Regression targets (real values, one a sample) against each wrong choice."""
    raw = merge(REGRESSION, change)
    with pytest.raises(ConfigError, match=f"^config error: {message}") as caught:
        preflight([config_from_dict(raw)])
    assert "\n" not in str(caught.value)


def test_a_partition_by_label_needs_class_labels():
    cfg = config_from_dict(merge(REGRESSION, {"data": {"partition": "dirichlet"}}))
    with pytest.raises(ConfigError, match="data.partition: dirichlet splits by class label"):
        make_partition(cfg.data, load_dataset(cfg.data).train_labels, 0)
