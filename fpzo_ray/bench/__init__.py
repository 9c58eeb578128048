"""Benchmarks: ``python -m fpzo_ray.bench NAME`` (see ``__main__``)."""
