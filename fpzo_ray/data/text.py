"""Text from the researcher's files as token ids: a classification set (one label a text) or
a language-modelling set (each token's next token), for ``data.target``.

```yaml
data:
  target: "fpzo_ray.data.text:load_text_classification"
  args: {train: reviews_train.csv, test: reviews_test.csv, max_length: 32}
```

Files are CSV or JSON lines (``.jsonl``) with a text column and, for classification, a label
column (class names or integers; names are numbered in sorted order). Texts are tokenised
once, here: by a Hugging Face tokenizer saved in a local folder (``tokenizer``; nothing is
downloaded), or by default by a word vocabulary built from the training texts (lower-cased
words, the ``vocab_size`` - 2 most frequent, id 0 padding, id 1 unknown). Every text becomes
``max_length`` ids, truncated or padded; the inputs are those ids (as float32 for the model:
``fpzo_ray.models.huggingface.TokenModel`` turns them back).
"""

from __future__ import annotations

import collections
import re
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd

from fpzo_ray.data.arrays import ArrayDataset, from_arrays
from fpzo_ray.task.losses import IGNORE_INDEX

PAD, UNKNOWN = 0, 1
_WORD = re.compile(r"\w+|[^\w\s]")

#: ``tokenise(texts) -> (N, max_length) int64 ids``, padding :data:`PAD`.
Tokeniser = Callable[[list[str]], np.ndarray]


def _read(path: str | Path, columns: list[str]) -> pd.DataFrame:
    path = Path(path).expanduser()
    if not path.is_file():
        raise FileNotFoundError(f"data.args: no text file {path}")
    table = pd.read_json(path, lines=True) if path.suffix == ".jsonl" else pd.read_csv(path)
    missing = [c for c in columns if c not in table.columns]
    if missing:
        raise ValueError(
            f"data.args: {path.name} has no column {missing[0]!r} (it has "
            f"{', '.join(map(str, table.columns))})"
        )
    return table.dropna(subset=columns)


def word_tokeniser(texts: list[str], vocab_size: int, max_length: int) -> tuple[Tokeniser, int]:
    """The default tokeniser, the most frequent lower-cased words of ``texts``, and the size
    of its vocabulary (padding and unknown included)."""
    counts = collections.Counter(w for t in texts for w in _WORD.findall(t.lower()))
    words = [w for w, _ in counts.most_common(max(vocab_size - 2, 0))]
    ids = {w: i + 2 for i, w in enumerate(words)}

    def tokenise(batch: list[str]) -> np.ndarray:
        out = np.full((len(batch), max_length), PAD, dtype=np.int64)
        for row, text in enumerate(batch):
            tokens = [ids.get(w, UNKNOWN) for w in _WORD.findall(text.lower())][:max_length]
            out[row, : len(tokens)] = tokens
        return out

    return tokenise, len(words) + 2


def pretrained_tokeniser(folder: str, max_length: int) -> tuple[Tokeniser, int, int]:
    """A Hugging Face tokenizer from a local folder, its padding id and vocabulary size."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(folder, local_files_only=True)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else PAD

    def tokenise(batch: list[str]) -> np.ndarray:
        encoded = tokenizer(batch, max_length=max_length, truncation=True, padding="max_length")
        return np.asarray(encoded["input_ids"], dtype=np.int64)

    return tokenise, int(pad), len(tokenizer)


def _tokeniser(
    train_texts: list[str], tokenizer: str, vocab_size: int, max_length: int
) -> tuple[Tokeniser, int, int]:
    """``(tokenise, padding id, vocabulary size)``."""
    if tokenizer:
        return pretrained_tokeniser(tokenizer, max_length)
    tokenise, vocabulary = word_tokeniser(train_texts, vocab_size, max_length)
    return tokenise, PAD, vocabulary


def load_text_classification(
    train: str,
    test: str,
    text_column: str = "text",
    label_column: str = "label",
    max_length: int = 64,
    vocab_size: int = 5000,
    tokenizer: str = "",
) -> ArrayDataset:
    """A text classification set: inputs ``(N, max_length)`` token ids, one class a text."""
    tables = [_read(p, [text_column, label_column]) for p in (train, test)]
    texts = [t[text_column].astype(str).tolist() for t in tables]
    tokenise, _, _ = _tokeniser(texts[0], tokenizer, vocab_size, max_length)
    raw = [t[label_column] for t in tables]
    if all(pd.api.types.is_integer_dtype(r) for r in raw):
        labels = [r.to_numpy(dtype=np.int64) for r in raw]
    else:
        names = sorted(set(raw[0].astype(str)))
        index = {name: i for i, name in enumerate(names)}
        unknown = sorted(set(raw[1].astype(str)) - set(names))
        if unknown:
            raise ValueError(f"data.args: test label {unknown[0]!r} is not among the training's")
        labels = [r.astype(str).map(index).to_numpy(dtype=np.int64) for r in raw]
    return from_arrays(
        train=(tokenise(texts[0]), labels[0]),
        test=(tokenise(texts[1]), labels[1]),
        name=f"text:{Path(train).stem}",
    )


def load_text_lm(
    train: str,
    test: str,
    text_column: str = "text",
    max_length: int = 64,
    vocab_size: int = 5000,
    tokenizer: str = "",
) -> ArrayDataset:
    """A language-modelling set: inputs the first ``max_length`` - 1 ids of each text, targets
    each position's next id (padding :data:`~fpzo_ray.task.losses.IGNORE_INDEX`), for
    ``task.loss: token_cross_entropy``. The outputs are the vocabulary (``num_classes``)."""
    tables = [_read(p, [text_column]) for p in (train, test)]
    texts = [t[text_column].astype(str).tolist() for t in tables]
    tokenise, pad, vocabulary = _tokeniser(texts[0], tokenizer, vocab_size, max_length)
    splits = []
    for batch in texts:
        ids = tokenise(batch)
        targets = ids[:, 1:].copy()
        targets[targets == pad] = IGNORE_INDEX
        splits.append((ids[:, :-1], targets))
    return from_arrays(
        train=splits[0], test=splits[1], num_classes=vocabulary, name=f"lm:{Path(train).stem}"
    )
