"""The configuration reference (``docs/reference/fields.md``) is generated from the
configuration classes and committed as generated: every field is on it, and a field added
without regenerating the page fails here."""

from __future__ import annotations

from fpzo_ray.config import field_infos
from fpzo_ray.reference import PAGE, page


def test_the_committed_page_is_what_the_generator_writes():
    assert PAGE.read_text() == page(), "run: python -m fpzo_ray.reference"


def test_every_field_is_on_the_page_with_its_default():
    text = page()
    infos = field_infos()
    assert len(infos) > 80
    for info in infos:
        assert f"| `{info.name}` | `{info.default!r}`" in text.replace("\\|", "|"), info.name
