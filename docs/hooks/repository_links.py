"""MkDocs hook: links from the documentation to the repository's own files.

The pages are written to be read on the repository too, so they link files outside ``docs/``
(``../README.md#metrics``, ``../configs/reproduce/gp1d.yaml``). The built site cannot serve
those: each such link becomes its text. A link to a missing file, or to a heading a Markdown
file does not have, is a warning (an error under ``mkdocs build --strict``).
"""

from __future__ import annotations

import logging
import re
from pathlib import Path
from typing import Any

log = logging.getLogger("mkdocs.hooks.repository_links")

LINK = re.compile(r"(?<!!)\[(?P<text>[^\]]+)\]\((?P<target>[^)\s#]*)(?:#(?P<anchor>[^)\s]*))?\)")
HEADING = re.compile(r"^#{1,6} +(?P<title>.+?) *#*$", flags=re.MULTILINE)


def on_page_markdown(markdown: str, *, page: Any, config: Any, **kwargs: Any) -> str:
    """``markdown`` with each link that leaves the docs folder replaced by its text."""
    docs = Path(config["docs_dir"]).resolve()
    folder = (docs / page.file.src_path).parent

    def replace(link: re.Match) -> str:
        target, anchor = link["target"], link["anchor"]
        if not target or "://" in target:
            return link[0]
        path = (folder / target).resolve()
        if path.is_relative_to(docs):
            return link[0]
        if not path.exists():
            log.warning("%s links %s, which does not exist", page.file.src_path, target)
        elif anchor and path.suffix == ".md" and anchor not in heading_anchors(path):
            log.warning("%s links %s#%s: no such heading", page.file.src_path, target, anchor)
        return link["text"]

    return LINK.sub(replace, markdown)


def heading_anchors(path: Path) -> set[str]:
    """The anchors a repository host gives the headings of a Markdown file."""
    titles = HEADING.findall(path.read_text(encoding="utf-8"))
    return {re.sub(r"[^\w\- ]", "", title.lower()).replace(" ", "-") for title in titles}
