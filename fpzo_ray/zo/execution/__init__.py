"""How the simulator runs the ZO method fast: not the method itself (``zo/``: directions,
estimators, local steps, the server's rebuild) but equivalent ways of executing it, each
giving the same loss differences as the plain loop up to float rounding:

- ``batched``: the K perturbed forward passes as one ``torch.func.vmap`` call;
- ``stacked``: the K perturbed models as one stacked model (grouped convolutions, batched
  matrix products) for the module types of the shipped models;
- ``compiled``: either of them under ``torch.compile`` (``simulation.compile``);
- ``auto_batching``: which of them ``zo.batching: auto`` runs for a model;
- ``philox_kernels`` / ``philox_build``: the Philox direction generator's compiled kernels,
  built once per machine.
"""
