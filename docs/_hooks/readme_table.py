"""MkDocs hook used by the documentation build (``mkdocs.yml``), not shipped.

The README's support table (between ``<!-- contract-table:start -->`` and
``<!-- contract-table:end -->``) is generated from the contract tests and kept
equal to them by a test. A page that holds the marker ``<!-- support-table -->``
gets that table in its place, so the site shows the same, checked table.
"""

from __future__ import annotations

import re
from pathlib import Path

from mkdocs.exceptions import PluginError

START = "<!-- contract-table:start -->"
END = "<!-- contract-table:end -->"
PLACEHOLDER = "<!-- support-table -->"


def readme_table(readme: Path) -> str:
    match = re.search(re.escape(START) + r"\n(.*?)\n?" + re.escape(END), readme.read_text(), re.S)
    if match is None:
        raise PluginError(f"{readme} lacks the support table between {START} and {END}")
    return match.group(1).strip()


def on_page_markdown(markdown: str, page, config, files) -> str:
    if PLACEHOLDER not in markdown:
        return markdown
    readme = Path(config.config_file_path).parent / "README.md"
    return markdown.replace(PLACEHOLDER, readme_table(readme))
