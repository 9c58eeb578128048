import numpy as np
import pytest

from fpzo_ray.config import DataConfig
from fpzo_ray.data import PartitionError, label_histograms, make_partition


def _check_exact_cover(parts, n):
    joined = np.concatenate(parts)
    assert joined.shape[0] == n and np.unique(joined).shape[0] == n


@pytest.mark.parametrize("partition", ["iid", "dirichlet"])
def test_deterministic_and_exact_cover(digits, partition):
    cfg = DataConfig(partition=partition, alpha=0.3, num_clients=40)
    a = make_partition(cfg, digits.train_labels, run_seed=7)
    b = make_partition(cfg, digits.train_labels, run_seed=7)
    c = make_partition(cfg, digits.train_labels, run_seed=8)
    assert all(np.array_equal(x, y) for x, y in zip(a, b))
    assert not all(np.array_equal(x, y) for x, y in zip(a, c))
    _check_exact_cover(a, digits.num_train)
    assert min(p.shape[0] for p in a) >= cfg.min_partition_size


def _mean_max_class_share(digits, alpha):
    cfg = DataConfig(partition="dirichlet", alpha=alpha, num_clients=50)
    parts = make_partition(cfg, digits.train_labels, run_seed=0)
    hist = label_histograms(digits.train_labels, parts, 10)
    return float((hist.max(1) / hist.sum(1)).mean()), hist


def test_small_alpha_skews_large_alpha_is_near_uniform(digits):
    skewed, hist_small = _mean_max_class_share(digits, 0.05)
    uniform, hist_large = _mean_max_class_share(digits, 1000.0)
    assert skewed > 0.6  # most of a client's data is one class
    assert uniform < 0.3  # close to 1/10 per class
    assert (hist_small > 0).sum(1).mean() < 4 < (hist_large > 0).sum(1).mean()


def test_iid_sizes_are_balanced(digits):
    parts = make_partition(DataConfig(num_clients=50), digits.train_labels, run_seed=0)
    sizes = [p.shape[0] for p in parts]
    assert max(sizes) - min(sizes) <= 1


def test_too_many_clients_is_a_clear_error(digits):
    cfg = DataConfig(partition="dirichlet", num_clients=1000, min_partition_size=2)
    with pytest.raises(PartitionError, match="data.min_partition_size"):
        make_partition(cfg, digits.train_labels, run_seed=0)
