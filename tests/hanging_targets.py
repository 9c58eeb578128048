"""A researcher's model builder that never returns: named as a target by
``test_hostile_input.py``, it must be refused within the preflight's time limit."""

import time


def model(input_shape: tuple[int, ...], num_classes: int) -> None:
    time.sleep(3600)
