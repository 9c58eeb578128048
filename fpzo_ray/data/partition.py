"""Partitioners: how the training set is split across virtual clients.

A partitioner needs only the training labels: ``partition(labels, cfg, rng)`` (``cfg`` the
``data`` section, ``rng`` seeded from the run seed) returns one index array per client. The
registered ones (``fpzo_ray.registry.PARTITIONERS``: :func:`partition_iid`,
:func:`partition_dirichlet`, :func:`partition_shards`) assign every training sample to
exactly one client, as sorted ``int64`` arrays, and are a function of the labels and the
generator only; a researcher's own is named by its import path in ``data.partition``.
"""

from __future__ import annotations

import numpy as np

from fpzo_ray.config import ConfigError, DataConfig
from fpzo_ray.data.arrays import has_class_labels
from fpzo_ray.registry import PARTITIONERS
from fpzo_ray.seeding import Purpose, derive_seed

#: The registered partitioners that split by class label.
BY_LABEL = ("dirichlet", "shards")


class PartitionError(ConfigError):
    """The requested partition cannot be built (more clients than samples allow)."""


def iid_partition(num_samples: int, num_clients: int, rng: np.random.Generator) -> list[np.ndarray]:
    """A uniformly random split into parts whose sizes differ by at most one."""
    order = rng.permutation(num_samples)
    return [np.sort(part).astype(np.int64) for part in np.array_split(order, num_clients)]


def dirichlet_partition(
    labels: np.ndarray, num_clients: int, alpha: float, min_size: int, rng: np.random.Generator
) -> list[np.ndarray]:
    """Label skew by a Dirichlet prior over each client's class mix.

    Every client gets an equal share of the samples (sizes differ by at most one) and its own
    class proportions ``q ~ Dir(alpha * p)``, ``p`` the global class frequencies: small alpha
    gives each client few classes, large alpha near-uniform label histograms. Its samples are
    drawn without replacement from per-class pools; when a class runs out, ``q`` is
    renormalised over the classes left. Clients are filled in random order so that the
    depleted pools at the end do not always hit the same ids.

    Unlike the per-class split of Hsu et al. (2019), which redraws until every client reaches
    a minimum size and fails outright for small alpha and large populations (it could not
    split 1,437 digits over 100 clients at alpha 0.1), this works at any scale, which a
    10,000-client population needs. It is the scheme of Flower Datasets'
    ``InnerDirichletPartitioner`` with equal sizes.
    """
    labels = np.asarray(labels)
    n = labels.shape[0]
    if n // num_clients < min_size:
        raise PartitionError(
            f"config error: data.min_partition_size: {num_clients} clients x {min_size} > {n} "
            "training samples"
        )
    classes, counts = np.unique(labels, return_counts=True)
    prior = counts / n
    pools = [rng.permutation(np.flatnonzero(labels == c)) for c in classes]
    remaining = counts.astype(np.int64).copy()
    sizes = np.full(num_clients, n // num_clients, dtype=np.int64)
    sizes[: n % num_clients] += 1
    parts: list[np.ndarray] = [np.empty(0, dtype=np.int64)] * num_clients
    for client in rng.permutation(num_clients):
        mix = rng.dirichlet(alpha * prior * len(classes))
        take = np.zeros(len(classes), dtype=np.int64)
        need = int(sizes[client])
        while need > 0:
            open_ = remaining - take > 0
            weights = np.where(open_, mix, 0.0)
            if weights.sum() <= 1e-12:  # the client's favourite classes are exhausted
                weights = np.where(open_, remaining - take, 0).astype(np.float64)
            draw = rng.multinomial(need, weights / weights.sum())
            draw = np.minimum(draw, remaining - take)
            take += draw
            need -= int(draw.sum())
        pieces = []
        for c, k in enumerate(take):
            start = counts[c] - remaining[c]
            pieces.append(pools[c][start : start + k])
        remaining -= take
        parts[client] = np.sort(np.concatenate(pieces)).astype(np.int64)
    return parts


def shards_partition(
    labels: np.ndarray, num_clients: int, shards_per_client: int, rng: np.random.Generator
) -> list[np.ndarray]:
    """The pathological non-IID split of McMahan et al. (2017): a few label-sorted shards each.

    Sample indices are sorted by label (a stable sort of a random permutation, so the order
    within a class is random), cut into ``num_clients * shards_per_client`` contiguous shards
    whose sizes differ by at most one, and each client is dealt ``shards_per_client`` random
    shards. A client therefore sees at most ``shards_per_client`` classes, plus one for each
    of its shards that straddles a class boundary; with 2 shards per client this is the
    paper's "each client has examples of only two digits".
    """
    labels = np.asarray(labels)
    n = labels.shape[0]
    num_shards = num_clients * shards_per_client
    if num_shards > n:
        raise PartitionError(
            f"config error: data.shards_per_client: {num_clients} clients x {shards_per_client} "
            f"shards > {n} training samples"
        )
    shuffled = rng.permutation(n)
    by_label = shuffled[np.argsort(labels[shuffled], kind="stable")]
    shards = np.array_split(by_label, num_shards)
    dealt = rng.permutation(num_shards).reshape(num_clients, shards_per_client)
    return [np.sort(np.concatenate([shards[s] for s in hand])).astype(np.int64) for hand in dealt]


# -- the registered partitioners: partition(labels, cfg, rng) -> one index array per client ---


def partition_iid(
    labels: np.ndarray, cfg: DataConfig, rng: np.random.Generator
) -> list[np.ndarray]:
    """``data.partition: iid``: :func:`iid_partition` of the training pool."""
    n = labels.shape[0]
    if cfg.num_clients * cfg.min_partition_size > n:
        raise PartitionError(
            f"config error: data.min_partition_size: {cfg.num_clients} clients x "
            f"{cfg.min_partition_size} > {n} training samples"
        )
    return iid_partition(n, cfg.num_clients, rng)


def partition_dirichlet(
    labels: np.ndarray, cfg: DataConfig, rng: np.random.Generator
) -> list[np.ndarray]:
    """``data.partition: dirichlet``: :func:`dirichlet_partition` with ``data.alpha``."""
    return dirichlet_partition(labels, cfg.num_clients, cfg.alpha, cfg.min_partition_size, rng)


def partition_shards(
    labels: np.ndarray, cfg: DataConfig, rng: np.random.Generator
) -> list[np.ndarray]:
    """``data.partition: shards``: :func:`shards_partition` with ``data.shards_per_client``."""
    n = labels.shape[0]
    # The smallest client holds shards_per_client shards of the smaller size.
    num_shards = cfg.num_clients * cfg.shards_per_client
    smallest = cfg.shards_per_client * (n // num_shards)
    if smallest < cfg.min_partition_size:
        raise PartitionError(
            f"config error: data.min_partition_size: {n} training samples cut into "
            f"{cfg.num_clients} clients x {cfg.shards_per_client} shards leave {smallest} < "
            f"{cfg.min_partition_size} on the smallest client"
        )
    return shards_partition(labels, cfg.num_clients, cfg.shards_per_client, rng)


def check_partition(
    parts: object, num_samples: int, num_clients: int, source: str
) -> list[np.ndarray]:
    """A partitioner's result as sorted ``int64`` index arrays, or :class:`PartitionError`.

    It must be a list (or tuple) of exactly ``num_clients`` one-dimensional integer index
    arrays, each non-empty, within ``[0, num_samples)`` and disjoint from the others (samples
    may be left out). ``source``: what returned it (``data.partition``'s value).
    """

    def fail(why: str) -> PartitionError:
        return PartitionError(f"config error: data.partition: {source} returned {why}")

    if not isinstance(parts, (list, tuple)):
        raise fail(f"a {type(parts).__name__}, not a list of {num_clients} index arrays")
    if len(parts) != num_clients:
        raise fail(f"{len(parts)} index arrays for data.num_clients={num_clients}")
    out: list[np.ndarray] = []
    seen = np.zeros(num_samples, dtype=bool)
    for client, part in enumerate(parts):
        try:
            array = np.asarray(part.detach().cpu() if hasattr(part, "detach") else part)
        except (TypeError, ValueError):
            raise fail(f"a {type(part).__name__} for client {client}, not an index array") from None
        if array.size == 0:
            raise fail(f"no samples for client {client}")
        if array.ndim != 1 or not np.issubdtype(array.dtype, np.integer):
            raise fail(
                f"an array of shape {array.shape} and dtype {array.dtype} for client {client}, "
                "not a one-dimensional integer index array"
            )
        low, high = int(array.min()), int(array.max())
        if low < 0 or high >= num_samples:
            raise fail(
                f"index {low if low < 0 else high} for client {client}, outside the "
                f"{num_samples} training samples"
            )
        array = np.sort(array).astype(np.int64)
        if np.any(array[1:] == array[:-1]):
            raise fail(f"a sample index twice for client {client}")
        if seen[array].any():
            shared = int(array[seen[array]][0])
            raise fail(f"sample {shared} for client {client} and an earlier client as well")
        seen[array] = True
        out.append(array)
    return out


def make_partition(cfg: DataConfig, labels: np.ndarray, run_seed: int) -> list[np.ndarray]:
    """The partition ``data.partition`` names (``fpzo_ray.registry.PARTITIONERS`` or an import
    path), seeded by the run seed, its result checked by :func:`check_partition`."""
    labels = np.asarray(labels)
    if cfg.partition in BY_LABEL and not has_class_labels(labels):
        raise PartitionError(
            f"config error: data.partition: {cfg.partition} splits by class label, and the "
            f"targets are not class indices (shape {labels.shape}, {labels.dtype}): use iid "
            "or a partitioner of your own"
        )
    rng = np.random.default_rng(derive_seed(run_seed, Purpose.PARTITION))
    partitioner = PARTITIONERS.load(cfg.partition)
    parts = partitioner(labels, cfg, rng)
    return check_partition(parts, labels.shape[0], cfg.num_clients, cfg.partition)


def label_histograms(labels: np.ndarray, parts: list[np.ndarray], num_classes: int) -> np.ndarray:
    """``(num_clients, num_classes)`` counts of each label on each client."""
    return np.stack([np.bincount(labels[p], minlength=num_classes) for p in parts])


def client_holdout(
    parts: list[np.ndarray], fraction: float, run_seed: int
) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Each client's partition split into what it trains on and what it keeps for federated
    evaluation (``task.client_holdout``): ``round(fraction * n)`` of its ``n`` samples, seeded
    per client, never all of them (one sample always stays for training). Both lists hold
    sorted ``int64`` arrays; a client's two parts are disjoint and together its partition."""
    train, held = [], []
    for client_id, part in enumerate(parts):
        rng = np.random.default_rng(derive_seed(run_seed, Purpose.CLIENT_HOLDOUT, client_id))
        count = min(round(fraction * part.shape[0]), part.shape[0] - 1)
        shuffled = rng.permutation(part)
        held.append(np.sort(shuffled[:count]).astype(np.int64))
        train.append(np.sort(shuffled[count:]).astype(np.int64))
    return train, held
