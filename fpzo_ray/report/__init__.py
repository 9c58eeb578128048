"""What people look at: figures of a run and of a sweep, and a sweep's report.

- ``run_figures``: accuracy by round and by client FLOPs, the mask's layer densities, client
  memory against device budgets, participation by outcome (logged to every run);
- ``sweep_figures``: accuracy against client FLOPs with the Pareto front, accuracy by round
  with a band over seeds, accuracy against upload, heat maps over pairs of axes;
- ``document``: ``report.html`` and ``summary.md`` from a ``SweepRecord``, which ``sources``
  reads from an experiment folder or an MLflow server (``python -m fpzo_ray.report``).

Plain matplotlib and pandas; MLflow only in ``sources`` and ``publish``.
"""
