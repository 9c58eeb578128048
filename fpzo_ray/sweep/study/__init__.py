"""Hyperparameter searches and studies: search spaces, selection on validation metrics,
statistics over repeated seeds, and the per-cell summary. ``scheduler`` is the only part
that knows Ray Tune; the rest is plain Python."""
