"""One run's lifecycle, shared by both entry points.

The engine's round loop (``sim.ray.federation.run_federated``) calls a list of
``sim.callbacks.RunCallback`` objects (the hooks are the engine's interface; what implements
them lives here, above it): ``on_start``, ``on_round`` (as soon as a round ends: may add
metrics, may end the run), ``after_round`` (recording, while the next round runs) and
``on_end``. What a run does around the engine is a composition of
the same callbacks:

- ``python -m fpzo_ray.run``: the researcher's callbacks, the MLflow recorder
  (``recorder``), the run-folder writer (``run_folder``) and the console progress
  (``console``);
- a sweep trial (``sweep.trial``): the researcher's callbacks, the run-folder writer (its
  checkpoints are Tune's) and the Tune reporter (``tune_reporter``); the MLflow recorder runs
  in the sweep's driver, fed by Tune's results (``sweep.callbacks.TrialMirror``), with the
  same rule for rounds already logged (``recorder.RoundRecorder``).
"""
