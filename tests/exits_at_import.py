"""A researcher's module that prints, then calls ``sys.exit(0)``, while it is imported: named
as a target by ``test_hostile_input.py``, it must be one error line, never exit 0."""

import sys

print("printed at import")
sys.exit(0)
