"""The ZO federated algorithms (``algorithms.base.FederatedAlgorithm`` subclasses): ZO FedSGD
(BAFFLE), ZO FedAvg and ZO FedSGD with estimate momentum, on the shared client steps of
``base``. They live with the method because only they need its types; the generic interface
(``fpzo_ray.algorithms``) and BP FedAvg import nothing from ``zo/``."""
