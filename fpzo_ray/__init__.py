"""fpzo_ray: a Ray-based simulator of federated foresight pruning + zeroth-order training.

Entry points: ``python -m fpzo_ray.sweep`` (a Tune sweep), ``python -m fpzo_ray.run`` (one
run). Algorithms live in plain PyTorch (``zo``, ``pruning``, ``accounting``); the Ray engine
in ``sim``.
"""

__version__ = "0.1.0"
