"""Short product reviews to classify as positive or negative: a synthetic corpus (templates,
a seeded draw), written as CSV files beside the sweep and read back through the package's
text loader, as a researcher's own files would be
(``fpzo_ray.data.text.load_text_classification``).

A review praises or criticises one to three aspects; "not" flips an adjective, and the label
is the sign of the sum, so word counts alone do not settle every review. Synthetic text says
nothing about real language: the example shows the plumbing (files, tokens, a transformer,
BP-free training), not a result.
"""

from __future__ import annotations

import csv
import os
import random
from pathlib import Path

from fpzo_ray.data import ArrayDataset
from fpzo_ray.data.text import load_text_classification

ASPECTS = [
    "the battery",
    "the screen",
    "the delivery",
    "the price",
    "the sound",
    "the camera",
    "the service",
    "the case",
    "the keyboard",
    "the charger",
]
GOOD = ["great", "excellent", "reliable", "fast", "sharp", "lovely", "solid", "good"]
BAD = ["terrible", "awful", "slow", "broken", "poor", "flimsy", "noisy", "bad"]
JOINS = [" and ", " but ", ", while ", "; "]


def review(rng: random.Random) -> tuple[str, str]:
    """One review and its label (``positive`` or ``negative``; never a tie)."""
    while True:
        parts, score = [], 0
        for aspect in rng.sample(ASPECTS, rng.randint(1, 3)):
            good = rng.random() < 0.5
            negated = rng.random() < 0.3
            adjective = rng.choice(GOOD if good else BAD)
            parts.append(f"{aspect} is {'not ' if negated else ''}{adjective}")
            score += (1 if good else -1) * (-1 if negated else 1)
        if score != 0:
            break
    text = parts[0]
    for part in parts[1:]:
        text += rng.choice(JOINS) + part
    return text.capitalize() + ".", "positive" if score > 0 else "negative"


def write_reviews(path: Path, count: int, seed: int) -> None:
    """``count`` reviews drawn from ``seed``, as a CSV file (written whole, then renamed:
    trials that write the same file at once leave one complete copy)."""
    rng = random.Random(seed)
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_suffix(f".{os.getpid()}.tmp")
    with partial.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["text", "label"])
        writer.writerows(review(rng) for _ in range(count))
    os.replace(partial, path)


def load(
    folder: str = "reviews", train_size: int = 2000, test_size: int = 500, max_length: int = 24
) -> ArrayDataset:
    """The corpus as ``<folder>/train.csv`` and ``<folder>/test.csv`` (written when missing;
    a relative folder is the one the sweep started in, on every node), tokenised by a word
    vocabulary of the training reviews."""
    train = Path(folder) / f"train_{train_size}.csv"
    test = Path(folder) / f"test_{test_size}.csv"
    if not train.is_file():
        write_reviews(train, train_size, seed=0)
    if not test.is_file():
        write_reviews(test, test_size, seed=1)
    return load_text_classification(str(train), str(test), max_length=max_length)
