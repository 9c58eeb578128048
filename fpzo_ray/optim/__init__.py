"""The optimizers every federated algorithm shares, whatever its gradients: the client's SGD
step (``client``) and the server's optimizer over the trained coordinates (``server``).
Plain PyTorch: nothing here knows Ray, ZO or BP."""
