"""Every relative link of the README and of ``docs/`` leads somewhere: the file exists and,
where the link names a heading (``page.md#a-heading``), the page has that heading. The
documentation site (``mkdocs.yml``) holds every page of ``docs/`` in its nav, and its build
(``make docs``, ``--strict``) checks the links between pages again; the links that leave
``docs/`` it leaves to this test (``mkdocs_hooks.py`` makes them plain links)."""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path

import pytest
import yaml
from studies import ROOT

PAGES = [ROOT / "README.md", ROOT / "CHANGELOG.md", *sorted((ROOT / "docs").rglob("*.md"))]
LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")
FENCE = re.compile(r"^```.*?^```", re.M | re.S)


def anchor(heading: str) -> str:
    """A heading's anchor as GitHub and MkDocs write it: lower case, punctuation dropped,
    spaces as hyphens."""
    text = re.sub(r"[`*_]", "", heading.strip().lower())
    text = re.sub(r"[^\w\- ]", "", text)
    return text.replace(" ", "-")


def anchors(page: Path) -> set[str]:
    text = FENCE.sub("", page.read_text())
    return {anchor(m.group(1)) for m in re.finditer(r"^#+ (.+)$", text, re.M)}


def links(page: Path) -> list[str]:
    return LINK.findall(FENCE.sub("", page.read_text()))


def test_anchor_is_the_heading_slug():
    assert anchor("How to run a fair study") == "how-to-run-a-fair-study"
    assert anchor("Execution modes: speed and memory") == "execution-modes-speed-and-memory"


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_relative_link_resolves(page):
    broken = []
    for target in links(page):
        if re.match(r"^[a-z]+:", target):  # http:, https:, mailto:
            continue
        path, _, fragment = target.partition("#")
        linked = (page.parent / path).resolve() if path else page
        if not linked.exists():
            broken.append(f"{target} (no such file)")
        elif fragment and linked.suffix == ".md" and fragment not in anchors(linked):
            broken.append(f"{target} (no such heading)")
    assert broken == []


def _nav_pages(entries) -> list[str]:
    pages = []
    for entry in entries:
        for value in entry.values() if isinstance(entry, dict) else [entry]:
            pages += _nav_pages(value) if isinstance(value, list) else [value]
    return pages


def test_the_sites_nav_holds_every_page_of_docs_once():
    config = yaml.safe_load((ROOT / "mkdocs.yml").read_text())
    assert (config["docs_dir"], config["site_dir"]) == ("docs", "site")
    nav = _nav_pages(config["nav"])
    on_disk = sorted(str(p.relative_to(ROOT / "docs")) for p in (ROOT / "docs").rglob("*.md"))
    assert sorted(nav) == on_disk


def _hooks():
    spec = importlib.util.spec_from_file_location("mkdocs_hooks", ROOT / "mkdocs_hooks.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_links_out_of_docs_become_plain_links_from_where_the_page_is_built():
    hooks = _hooks()
    config = {"docs_dir": str(ROOT / "docs"), "site_dir": str(ROOT / "site")}
    text = (
        "[`yaml`](../../clusters/aws-gpu.yaml#L4) [page](cluster.md#a) [web](https://x.org)"
        " ![image](../../x.png)\n```\n[code](../../README.md)\n```\n[up](../../README.md)\n"
    )
    out = hooks._rewrite(text, "howto/gpu.md", "howto/gpu.html", config)
    assert out == (
        '<a href="../../clusters/aws-gpu.yaml#L4">`yaml`</a> [page](cluster.md#a)'
        " [web](https://x.org) ![image](../../x.png)\n```\n[code](../../README.md)\n```\n"
        '<a href="../../README.md">up</a>\n'
    )
    # a page built one folder deeper (directory URLs) links one folder further up
    out = hooks._rewrite("[r](../README.md)", "tutorial.md", "tutorial/index.html", config)
    assert out == '<a href="../../README.md">r</a>'


def test_sphinx_roles_in_docstrings_become_inline_code():
    plain = _hooks().plain_roles
    assert plain("a :class:`Task` and :meth:`~fpzo_ray.zo.DirectionStream.fill`.") == (
        "a `Task` and `fill`."
    )
    assert plain(":py:func:`x.y` and ``z``") == "`x.y` and ``z``"
