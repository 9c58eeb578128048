import numpy as np
import pytest

from fpzo_ray.config import DataConfig
from fpzo_ray.data import (
    PartitionError,
    label_histograms,
    make_partition,
    shards_partition,
)


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


def _shard_label_sets(labels, num_shards):
    """The label set of each shard: shards are contiguous runs of the label-sorted samples, so
    which labels a shard holds does not depend on the seed (only which samples do)."""
    return [set(np.unique(run).tolist()) for run in np.array_split(np.sort(labels), num_shards)]


def test_shards_deterministic_exact_cover_and_sizes(digits):
    cfg = DataConfig(partition="shards", shards_per_client=2, num_clients=50)
    a = make_partition(cfg, digits.train_labels, run_seed=7)
    b = make_partition(cfg, digits.train_labels, run_seed=7)
    c = make_partition(cfg, digits.train_labels, run_seed=8)
    assert all(np.array_equal(x, y) for x, y in zip(a, b))
    assert not all(np.array_equal(x, y) for x, y in zip(a, c))
    assert len(a) == 50 and all(p.dtype == np.int64 for p in a)
    assert all(np.array_equal(p, np.sort(p)) for p in a)
    _check_exact_cover(a, digits.num_train)
    shard_size = digits.num_train // 100  # 1437 samples in 100 shards of 14 or 15
    assert all(2 * shard_size <= p.shape[0] <= 2 * (shard_size + 1) for p in a)


@pytest.mark.parametrize("shards_per_client", [1, 2, 3])
def test_shards_limit_the_labels_per_client(digits, shards_per_client):
    num_clients = 30
    labels = digits.train_labels
    cfg = DataConfig(
        partition="shards", shards_per_client=shards_per_client, num_clients=num_clients
    )
    parts = make_partition(cfg, labels, run_seed=3)
    shard_labels = _shard_label_sets(labels, num_clients * shards_per_client)
    straddling = sum(len(s) > 1 for s in shard_labels)
    assert all(len(s) <= 2 for s in shard_labels)  # every class is larger than a shard
    distinct = (label_histograms(labels, parts, 10) > 0).sum(1)
    # At most one class per shard, plus one per shard that straddles a class boundary.
    assert distinct.max() <= shards_per_client + min(shards_per_client, straddling)
    assert np.maximum(distinct - shards_per_client, 0).sum() <= straddling
    assert (distinct <= shards_per_client).mean() >= 0.5


def test_shards_with_class_aligned_shards_give_pure_clients():
    """10 classes x 20 samples in 20 shards of 10: no shard straddles, so a client's labels are
    exactly those of its 2 shards and each of its classes arrives in whole shards."""
    labels = np.repeat(np.arange(10, dtype=np.uint8), 20)
    cfg = DataConfig(partition="shards", shards_per_client=2, num_clients=10, min_partition_size=20)
    parts = make_partition(cfg, labels, run_seed=0)
    hist = label_histograms(labels, parts, 10)
    assert ((hist > 0).sum(1) <= 2).all() and set(np.unique(hist)) <= {0, 10, 20}
    assert (hist.sum(0) == 20).all() and (hist.sum(1) == 20).all()


@pytest.mark.parametrize(
    "num_clients, shards_per_client, min_size",
    [
        (1000, 2, 2),  # 2000 shards > 1437 samples
        (700, 2, 3),  # 1400 shards of one sample: 2 per client < 3
    ],
)
def test_impossible_shards_config_is_a_clear_error(
    digits, num_clients, shards_per_client, min_size
):
    cfg = DataConfig(
        partition="shards",
        num_clients=num_clients,
        shards_per_client=shards_per_client,
        min_partition_size=min_size,
    )
    with pytest.raises(PartitionError, match="^config error: data.min_partition_size:"):
        make_partition(cfg, digits.train_labels, run_seed=0)


def test_shards_partition_refuses_more_shards_than_samples():
    with pytest.raises(PartitionError, match="data.shards_per_client"):
        shards_partition(np.zeros(5, dtype=np.uint8), 3, 2, np.random.default_rng(0))
