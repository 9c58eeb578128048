"""Hugging Face models built from a configuration (a tiny BERT, a tiny GPT-2), on token ids
read from text files of one's own (``fpzo_ray.data.text``): classification, language
modelling with the token-level loss, and a pretrained checkpoint from a local folder."""

from __future__ import annotations

import csv

import numpy as np
import pytest
import torch

from fpzo_ray.config import ConfigError, config_from_dict
from fpzo_ray.data import federated_data
from fpzo_ray.data.text import load_text_classification, load_text_lm
from fpzo_ray.preflight import preflight
from fpzo_ray.sim.in_process import run_in_process
from fpzo_ray.task import IGNORE_INDEX

transformers = pytest.importorskip("transformers")

HF = "fpzo_ray.models.huggingface:build"
TINY_BERT = {
    "model_type": "bert",
    "vocab_size": 40,
    "hidden_size": 16,
    "num_hidden_layers": 1,
    "num_attention_heads": 2,
    "intermediate_size": 32,
    "max_position_embeddings": 16,
}
TINY_GPT2 = {"model_type": "gpt2", "n_embd": 16, "n_layer": 1, "n_head": 2, "n_positions": 16}
COLOURS = ["red", "green", "blue"]


def _write(path, rows: list[tuple[str, str]]) -> str:
    with path.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["text", "label"])
        writer.writerows(rows)
    return str(path)


@pytest.fixture
def colour_files(tmp_path):
    """Sentences that name one colour among filler words; the label is the colour."""
    rng = np.random.default_rng(0)
    filler = ["the", "a", "sky", "car", "is", "was", "very", "quite", "today", "here"]

    def rows(n: int) -> list[tuple[str, str]]:
        out = []
        for _ in range(n):
            colour = COLOURS[rng.integers(3)]
            words = list(rng.choice(filler, 5)) + [colour]
            rng.shuffle(words)
            out.append((" ".join(words), colour))
        return out

    return _write(tmp_path / "train.csv", rows(300)), _write(tmp_path / "test.csv", rows(90))


def test_text_files_become_token_ids_with_a_vocabulary_of_the_training_words(colour_files):
    dataset = load_text_classification(*colour_files, max_length=8)
    assert dataset.input_shape == (8,) and dataset.num_classes == 3
    assert dataset.train_inputs.dtype == np.int64 and dataset.train_inputs.max() < 20
    # class names numbered in sorted order: blue, green, red
    assert set(np.unique(dataset.train_labels)) == {0, 1, 2}


def _colour_config(colour_files, **sections) -> dict:
    return {
        "data": {
            "target": "fpzo_ray.data.text:load_text_classification",
            "args": {"train": colour_files[0], "test": colour_files[1], "max_length": 8},
            "num_clients": 6,
        },
        "model": {"target": HF, "kwargs": TINY_BERT},
        "pruning": {"method": "ntk_sap_data", "sparsity": 0.3, "clients_per_iteration": 3},
        "training": {"rounds": 12, "clients_per_round": 3, "eval_every": 6},
        **sections,
    }


def test_a_bert_built_from_its_config_learns_which_colour_a_sentence_names(colour_files):
    bp = {
        "rounds": 10,
        "clients_per_round": 3,
        "eval_every": 5,
        "algorithm": "bp",
        "mode": "fedavg",
        "local_steps": 20,
        "client_lr": 0.2,
        "client_momentum": 0.9,
        "server_optimizer": "sgd",
        "server_lr": 1.0,
    }
    cfg = config_from_dict(_colour_config(colour_files, training=bp))
    preflight([cfg])
    metrics = run_in_process(cfg, *federated_data(cfg))
    assert metrics[-1]["test_accuracy"] > 0.8  # three colours: chance is 1/3


def test_a_bert_trains_bp_free_under_a_federated_ntk_sap_mask(colour_files):
    cfg = config_from_dict(_colour_config(colour_files))
    metrics = run_in_process(cfg, *federated_data(cfg))
    assert all(np.isfinite(m["train_loss"]) for m in metrics)
    assert "test_accuracy" in metrics[-1]


def test_a_vocabulary_larger_than_the_model_is_one_line(colour_files):
    small = {**TINY_BERT, "vocab_size": 5}
    cfg = config_from_dict(_colour_config(colour_files, model={"target": HF, "kwargs": small}))
    with pytest.raises(ConfigError, match="model.target: .*outside the model's vocabulary of 5"):
        preflight([cfg])


def test_a_gpt2_learns_the_next_token_with_the_token_level_loss(tmp_path):
    rows = [("one two three four five six", "")] * 40
    files = _write(tmp_path / "train.csv", rows), _write(tmp_path / "test.csv", rows[:10])
    dataset = load_text_lm(*files, max_length=8)
    # inputs: the first 7 ids; targets: the next id, padding ignored
    assert dataset.input_shape == (7,) and dataset.train_labels.shape[1:] == (7,)
    assert (dataset.train_labels[0, 5:] == IGNORE_INDEX).all()
    cfg = config_from_dict(
        {
            "data": {
                "target": "fpzo_ray.data.text:load_text_lm",
                "args": {"train": files[0], "test": files[1], "max_length": 8},
                "num_clients": 4,
            },
            "model": {"target": HF, "kwargs": {**TINY_GPT2, "kind": "causal_lm"}},
            "pruning": {"clients_per_iteration": 2},
            "task": {"loss": "token_cross_entropy"},
            "training": {
                "rounds": 10,
                "clients_per_round": 2,
                "eval_every": 5,
                "algorithm": "bp",
                "mode": "fedavg",
                "local_steps": 5,
                "client_lr": 0.3,
                "server_optimizer": "sgd",
                "server_lr": 1.0,
            },
        }
    )
    preflight([cfg])
    metrics = run_in_process(cfg, *federated_data(cfg))
    assert metrics[-1]["test_loss"] < metrics[0 if "test_loss" in metrics[0] else 4]["test_loss"]
    assert metrics[-1]["test_accuracy"] > 0.5  # one fixed sentence: each next token is known


def test_a_pretrained_checkpoint_loads_from_a_local_folder_without_a_network(tmp_path):
    from fpzo_ray.models.huggingface import build

    config = transformers.BertConfig(**{k: v for k, v in TINY_BERT.items() if k != "model_type"})
    config.num_labels = 3
    saved = transformers.BertForSequenceClassification(config)
    saved.save_pretrained(tmp_path / "checkpoint")
    model = build(num_classes=3, pretrained=str(tmp_path / "checkpoint"))
    ids = torch.tensor([[2.0, 5.0, 7.0, 0.0]])
    saved.eval(), model.eval()
    expected = saved(input_ids=ids.long(), attention_mask=(ids != 0).long()).logits
    torch.testing.assert_close(model(ids), expected)
