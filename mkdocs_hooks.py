"""The documentation site's two adapters, both named in mkdocs.yml.

``on_page_markdown``, an MkDocs hook (``hooks:``): links from a page to repository files
outside ``docs/`` (``../fpzo_ray/config.py``, ``../clusters/aws-gpu.yaml``, ``../README.md``).
MkDocs checks a relative link against the documentation files only, so such a link would be a
warning (an error under ``--strict``), and its URL would not follow the page into ``site/``.
Here each one that leads out of ``docs/`` becomes a plain HTML link to the same file, relative
to where the page is built: it opens that file of the checkout from a site opened as
``site/index.html``. Links between pages are left to MkDocs, which still checks them (and
their anchors) under ``--strict``. ``tests/test_docs_links.py`` checks that every relative
link, to a page or to any other file of the repository, resolves.

``SphinxRoles``, a Griffe extension (mkdocstrings' ``extensions:``): the docstrings name code
with Sphinx roles (``:class:`Task```, ``:meth:`~a.B.c```), which Markdown would print as
they are; on the API page each becomes inline code (``Task``, ``c``).
"""

from __future__ import annotations

import html
import os
import posixpath
import re
from typing import Any

LINK = re.compile(r"(?<!!)\[(?P<text>[^\]]*)\]\((?P<target>[^)\s]+)\)")
FENCE = re.compile(r"^(```|~~~).*?^\1", re.M | re.S)


def _outside_docs(target: str, page_src: str, docs_dir: str) -> str | None:
    """The file's path, relative to the repository root, where ``target`` leads out of the
    documentation; None for a URL, an anchor or a link between pages."""
    if re.match(r"^[a-z][a-z0-9+.-]*:", target) or target.startswith(("#", "/")):
        return None
    path = target.partition("#")[0]
    linked = os.path.normpath(os.path.join(docs_dir, os.path.dirname(page_src), path))
    if os.path.commonpath([linked, docs_dir]) == docs_dir:
        return None
    return os.path.relpath(linked, os.path.dirname(docs_dir))


def _rewrite(text: str, page_src: str, page_dest: str, config: Any) -> str:
    docs_dir = os.path.abspath(config["docs_dir"])
    site_dir = os.path.abspath(config["site_dir"])
    root = os.path.dirname(docs_dir)
    built_in = os.path.dirname(os.path.join(site_dir, page_dest))

    def link(match: re.Match[str]) -> str:
        target = match.group("target")
        repo_path = _outside_docs(target, page_src, docs_dir)
        if repo_path is None:
            return match.group(0)
        url = os.path.relpath(os.path.join(root, repo_path), built_in).replace(os.sep, "/")
        fragment = target.partition("#")[2]
        href = html.escape(posixpath.normpath(url) + (f"#{fragment}" if fragment else ""))
        return f'<a href="{href}">{match.group("text")}</a>'

    out, last = [], 0
    for fence in FENCE.finditer(text):  # fenced code is left as it is
        out.append(LINK.sub(link, text[last : fence.start()]) + fence.group(0))
        last = fence.end()
    out.append(LINK.sub(link, text[last:]))
    return "".join(out)


ROLE = re.compile(
    r":(?:py:)?(?:class|meth|func|attr|mod|data|exc|obj):`(?P<tilde>~?)(?P<name>[^`]+)`"
)


def _plain_role(match: re.Match[str]) -> str:
    name = match.group("name")
    return f"`{name.rsplit('.', 1)[-1] if match.group('tilde') else name}`"


def plain_roles(docstring: str) -> str:
    """``docstring`` with each Sphinx cross-reference role as inline code."""
    return ROLE.sub(_plain_role, docstring)


try:
    from griffe import Extension, Object
except ImportError:  # MkDocs loads this file as a hook; only mkdocstrings needs griffe
    pass
else:

    class SphinxRoles(Extension):
        """Sphinx roles in docstrings as inline code (``mkdocs_hooks.py:SphinxRoles``)."""

        def on_object(self, *, obj: Object, **kwargs: Any) -> None:
            if obj.docstring is not None:
                obj.docstring.value = plain_roles(obj.docstring.value)


def on_page_markdown(markdown: str, page: Any, config: Any, files: Any) -> str:
    return _rewrite(markdown, page.file.src_path, page.file.dest_path, config)
