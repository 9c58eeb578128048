"""fpzo_ray: a Ray-based simulator of federated foresight pruning + zeroth-order training.

Entry points: ``python -m fpzo_ray.sweep`` (a Tune sweep), ``python -m fpzo_ray.run`` (one
run). Algorithms live in plain PyTorch (``zo``, ``pruning``, ``accounting``); the Ray engine
in ``sim``.
"""

import os

from fpzo_ray.cache import INDUCTOR_CACHE_ENV, inductor_cache_dir

__version__ = "0.1.0"

# torch keeps its compile cache (inductor's) in the temp folder by default: in the package's
# cache instead, unless the user chose a place. Every process that imports the package (the
# driver, Ray's workers) sets it before torch compiles anything.
os.environ.setdefault(INDUCTOR_CACHE_ENV, str(inductor_cache_dir()))
