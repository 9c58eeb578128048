"""Models: ``build_model`` turns a configuration into a fresh ``nn.Module``.

The registered architectures are ``fpzo_ray.registry.MODELS``; a researcher's is any
``nn.Module`` returned by ``build(input_shape, num_classes, **model.args)``, or by a zoo's
keyword-only builder (``torchvision.models:resnet18`` with ``model.kwargs``), named by its
import path in ``model.target`` (``docs/EXTENDING.md``, ``registry.model_call``).
"""

from __future__ import annotations

from fpzo_ray.models.build import build_model
from fpzo_ray.models.digits_cnn import DigitsCNN
from fpzo_ray.models.flat import ParameterLayout, bind_flat_buffer, layout_of
from fpzo_ray.models.lenet import LeNet5
from fpzo_ray.models.pruned import load_pruned
from fpzo_ray.models.resnet import ResNet18, ResNet20
from fpzo_ray.models.staged import StagedModel

__all__ = [
    "build_model",
    "load_pruned",
    "DigitsCNN",
    "LeNet5",
    "ResNet20",
    "ResNet18",
    "StagedModel",
    "ParameterLayout",
    "bind_flat_buffer",
    "layout_of",
]
