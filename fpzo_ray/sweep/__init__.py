"""Sweeps: ``python -m fpzo_ray.sweep`` (``__main__``) runs a sweep file (``spec``: cells,
search, study; trial plans) as phases on Ray Tune (``phases``), each trial one federated run
(``trial``), mirrored into MLflow and printed as it goes (``callbacks``, ``trial_files``,
``progress``); the placement groups fit the cluster (``resources``); ``study/`` holds the
statistics, selection and tables (plain Python) and the per-cell ASHA scheduler."""
