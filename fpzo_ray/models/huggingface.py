"""Hugging Face ``transformers`` models as ``model.target``: built from a configuration (no
weights to download: a tiny BERT for a test, any size for a study) or from a pretrained
checkpoint in a local folder, for sequence classification, token classification or causal
language modelling.

```yaml
model:
  target: "fpzo_ray.models.huggingface:build"
  kwargs: {model_type: bert, vocab_size: 2000, hidden_size: 64, num_hidden_layers: 2,
           num_attention_heads: 2, intermediate_size: 128, max_position_embeddings: 64}
```

``num_classes`` is filled in by the simulator (the classes, the token labels, or the
vocabulary of a language model). The data set holds token ids as its inputs (``data.text``:
:func:`fpzo_ray.data.text.load_text_classification`); they reach the model as float32, like
every input, and :class:`TokenModel` turns them back into ids, builds the attention mask
from the padding id, and returns the logits tensor instead of Hugging Face's output object.

Needs the ``transformers`` package (``pip install 'fpzo_ray[hf]'``).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

#: ``kind`` -> the ``transformers`` auto class that builds it.
KINDS = {
    "sequence": "AutoModelForSequenceClassification",
    "token": "AutoModelForTokenClassification",
    "causal_lm": "AutoModelForCausalLM",
}


class TokenModel(nn.Module):
    """A ``transformers`` model on token ids given as float32 (the simulator's inputs),
    returning its logits. Ids are rounded and clipped to the vocabulary: the data-free pruning
    draws (Gaussian inputs) then become valid, if meaningless, token sequences (prune a text
    model on its data: ``pruning.method: ntk_sap_data``, ``snip``, or ``magnitude``). A real
    id beyond the vocabulary is an error, not a clip."""

    def __init__(self, model: nn.Module, vocab_size: int, pad_token_id: int) -> None:
        super().__init__()
        self.model = model
        self.vocab_size = vocab_size
        self.pad_token_id = pad_token_id

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        ids = x.round().long()
        if bool((ids == x).all()) and int(ids.max()) >= self.vocab_size:  # real token ids
            raise ValueError(
                f"token id {int(ids.max())} is outside the model's vocabulary of "
                f"{self.vocab_size} (raise vocab_size in model.kwargs)"
            )
        ids = ids.clamp(0, self.vocab_size - 1)
        attention_mask = (ids != self.pad_token_id).long()
        logits: torch.Tensor = self.model(input_ids=ids, attention_mask=attention_mask).logits
        return logits


def build(
    num_classes: int,
    model_type: str = "bert",
    kind: str = "sequence",
    pretrained: str = "",
    pad_token_id: int = 0,
    **config: Any,
) -> nn.Module:
    """A ``transformers`` model of ``kind`` (:data:`KINDS`) with ``num_classes`` outputs.

    ``pretrained``: a local folder holding a checkpoint (``save_pretrained``'s), loaded
    without a network; else a fresh model of ``model_type`` (``bert``, ``distilbert``,
    ``gpt2``, ...) built from ``config`` (the fields of its configuration class). A language
    model's outputs are its vocabulary, so ``num_classes`` is the vocabulary size there.
    """
    try:
        import transformers
    except ImportError:
        raise ImportError(
            "Hugging Face models need the transformers package: pip install 'fpzo_ray[hf]'"
        ) from None
    if kind not in KINDS:
        raise ValueError(f"kind: got {kind!r}, allowed: {', '.join(KINDS)}")
    auto = getattr(transformers, KINDS[kind])
    labels = {} if kind == "causal_lm" else {"num_labels": num_classes}
    if kind == "causal_lm":
        config.setdefault("vocab_size", num_classes)
    if pretrained:
        model = auto.from_pretrained(pretrained, local_files_only=True, **labels, **config)
    else:
        settings = transformers.AutoConfig.for_model(
            model_type, pad_token_id=pad_token_id, **labels, **config
        )
        model = auto.from_config(settings)
    return TokenModel(model, int(model.config.vocab_size), pad_token_id)
