"""Griffe extension used by the documentation build (``mkdocs.yml``), not shipped.

detblocks' docstrings are Google-style (``Args:``, ``Returns:``, ``Example:``)
with a few reStructuredText habits that read well in the source and in
``help()``. This extension rewrites them, when the package is loaded for the
documentation, into what mkdocstrings renders well:

* an ``Example:`` section header becomes ``Examples:``, so that the doctest
  lines are rendered as highlighted Python instead of Markdown quotes;
* an argument or attribute entry naming several (``height, width (int): ...``)
  becomes one entry per name with the shared description;
* ``#:`` comments above a module constant become its docstring;
* roles such as ``:func:`box_iou``` or ``:data:`~detblocks.conventions.NO_MATCH```
  become cross-references when the target is a documented detblocks object,
  and inline code otherwise;
* a paragraph ending in ``::`` loses one colon (its indented block is already
  Markdown code);
* simple tables (``====  ====`` borders) become Markdown tables, footnote
  references ``[1]_`` become superscripts, ``.. [1] text`` lines become notes.

The docstrings themselves are not modified on disk.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import griffe

_ROLE = re.compile(r":(?:func|class|data|meth|mod|attr|obj|exc|const):`(~?)([^`<>]+?)`")
_SECTION = re.compile(r"^(\s*)([A-Z][A-Za-z ]*):\s*$")
_ARG_SECTIONS = {
    "Args",
    "Arguments",
    "Parameters",
    "Params",
    "Other Parameters",
    "Keyword Args",
    "Attributes",
}
_MULTI_NAME = re.compile(r"^(\s*)((?:\*{0,2}\w+)(?:\s*,\s*\*{0,2}\w+)+)\s*(\(.*\))?\s*:(.*)$")
_BORDER = re.compile(r"^(\s*)(=+)((?: +=+)+)\s*$")
_FOOTNOTE_REF = re.compile(r"\s?\[(\d+)\]_")
_FOOTNOTE = re.compile(r"^(\s*)\.\. \[(\d+)\] (.*)$")


class RstMarkup(griffe.Extension):
    """Rewrite detblocks' reStructuredText habits into Markdown for mkdocstrings."""

    def on_package(self, *, pkg: griffe.Module, **kwargs: Any) -> None:
        for obj in _walk(pkg):
            if obj.docstring is None and obj.is_attribute:
                _comment_docstring(obj)
            if obj.docstring is not None:
                obj.docstring.value = convert(obj.docstring.value, obj, pkg)


def _comment_docstring(attr: griffe.Object) -> None:
    """Sphinx-style ``#:`` comments right above an attribute become its docstring."""
    if attr.lineno is None or not isinstance(attr.filepath, Path):
        return
    lines = attr.filepath.read_text().splitlines()
    doc: list[str] = []
    k = attr.lineno - 2
    while k >= 0 and lines[k].lstrip().startswith("#:"):
        doc.insert(0, lines[k].lstrip()[2:].strip())
        k -= 1
    if doc:
        attr.docstring = griffe.Docstring("\n".join(doc), lineno=k + 2, parent=attr)


def _walk(obj: griffe.Object):
    yield obj
    for member in obj.members.values():
        if not member.is_alias:
            yield from _walk(member)  # type: ignore[arg-type]


def convert(text: str, obj: griffe.Object, pkg: griffe.Module) -> str:
    lines = text.splitlines()
    lines = _examples_headers(lines)
    lines = _split_multi_names(lines)
    lines = _returns_types(lines)
    lines = _tables(lines)
    lines = _footnotes(lines)
    lines = _literal_markers(lines)
    out = "\n".join(lines)
    return _ROLE.sub(lambda m: _role(m, obj, pkg), out)


def _examples_headers(lines: list[str]) -> list[str]:
    return [ln.replace("Example:", "Examples:") if ln.strip() == "Example:" else ln for ln in lines]


def _split_multi_names(lines: list[str]) -> list[str]:
    out: list[str] = []
    section: str | None = None
    section_indent = 0
    i = 0
    while i < len(lines):
        line = lines[i]
        head = _SECTION.match(line)
        if head:
            section, section_indent = head.group(2), len(head.group(1))
            out.append(line)
            i += 1
            continue
        if line.strip() and len(line) - len(line.lstrip()) <= section_indent:
            section = None
        item = _MULTI_NAME.match(line) if section in _ARG_SECTIONS else None
        if item is None:
            out.append(line)
            i += 1
            continue
        indent, names, kind, desc = item.groups()
        # The entry's continuation lines are indented deeper than the entry.
        j = i + 1
        while j < len(lines) and (
            not lines[j].strip() or len(lines[j]) - len(lines[j].lstrip()) > len(indent)
        ):
            j += 1
        while j > i + 1 and not lines[j - 1].strip():
            j -= 1
        for name in (n.strip() for n in names.split(",")):
            out.append(f"{indent}{name}{' ' + kind if kind else ''}:{desc}")
            out.extend(lines[i + 1 : j])
        i = j
    return out


def _returns_types(lines: list[str]) -> list[str]:
    """Set the leading ``Tensor[B, N] (int64):`` of a ``Returns:`` entry in code.

    Griffe would read ``Tensor[B, N]: ...`` as a whole description, or mangle it as
    a named value; in code it reads as the shape-typed return value it is.
    """
    out = list(lines)
    for k, line in enumerate(lines[:-1]):
        if line.strip() != "Returns:" or not lines[k + 1].strip():
            continue
        first = lines[k + 1]
        cut = _type_prefix_end(first)
        if cut is None:
            continue
        indent = first[: len(first) - len(first.lstrip())]
        kind, rest = first[len(indent) : cut], first[cut + 1 :]
        kind = f"**{kind}**" if "`" in kind else f"`{kind}`"
        out[k + 1] = f"{indent}{kind}:{rest}"
    return out


def _type_prefix_end(line: str) -> int | None:
    """Index of the first ``:`` outside brackets and backticks, when followed by a space."""
    depth, code = 0, False
    for i, ch in enumerate(line):
        if ch == "`":
            code = not code
        elif code:
            continue
        elif ch in "([{":
            depth += 1
        elif ch in ")]}":
            depth -= 1
        elif ch == ":" and depth == 0:
            return i if line[i + 1 : i + 2] in (" ", "") and i < 80 else None
    return None


def _tables(lines: list[str]) -> list[str]:
    """RST simple tables (border, header, border, rows, border) to Markdown tables."""
    out: list[str] = []
    i = 0
    while i < len(lines):
        border = _BORDER.match(lines[i])
        if not border:
            out.append(lines[i])
            i += 1
            continue
        indent = border.group(1)
        spans = [(m.start(), m.end()) for m in re.finditer(r"=+", lines[i])]
        # Find the header border and the closing border.
        borders = [i]
        j = i + 1
        while j < len(lines) and len(borders) < 3:
            if lines[j].strip() == lines[i].strip():
                borders.append(j)
            elif not lines[j].strip():
                break
            j += 1
        if len(borders) != 3:
            out.append(lines[i])
            i += 1
            continue
        header = _rows(lines[borders[0] + 1 : borders[1]], spans)
        body = _rows(lines[borders[1] + 1 : borders[2]], spans)
        if out and out[-1].strip():
            out.append("")
        for k, row in enumerate(header[:1] + body):
            out.append(indent + "| " + " | ".join(c.replace("|", "\\|") for c in row) + " |")
            if k == 0:
                out.append(indent + "|" + "|".join("---" for _ in spans) + "|")
        i = borders[2] + 1
    return out


def _rows(lines: list[str], spans: list[tuple[int, int]]) -> list[list[str]]:
    rows: list[list[str]] = []
    for line in lines:
        cells = []
        for k, (start, _) in enumerate(spans):
            stop = spans[k + 1][0] if k + 1 < len(spans) else None
            # The last column runs to the end of the line; others end where the next begins.
            cells.append(line[start:stop].strip() if stop is not None else line[start:].strip())
        if rows and not cells[0]:
            rows[-1] = [f"{a} {b}".strip() for a, b in zip(rows[-1], cells)]
        else:
            rows.append(cells)
    return rows


def _literal_markers(lines: list[str]) -> list[str]:
    """``text::`` before an indented block: the block is already Markdown code, drop one colon."""
    out = list(lines)
    for k, line in enumerate(lines[:-2]):
        if line.rstrip().endswith("::") and not lines[k + 1].strip():
            stripped = line.rstrip()[:-1]
            out[k] = stripped if stripped.strip() != ":" else ""
    return out


def _footnotes(lines: list[str]) -> list[str]:
    out: list[str] = []
    for line in lines:
        note = _FOOTNOTE.match(line)
        if note:
            line = f"{note.group(1)}<sup>{note.group(2)}</sup> {note.group(3)}"
        out.append(_FOOTNOTE_REF.sub(lambda m: f"<sup>{m.group(1)}</sup>", line))
    return out


def _role(match: re.Match, obj: griffe.Object, pkg: griffe.Module) -> str:
    short, name = match.group(1) == "~", match.group(2).strip()
    label = name.rsplit(".", 1)[-1] if short else name
    path = _resolve(name, obj, pkg)
    if path is None:
        return f"`{label}`"
    return f'<autoref optional identifier="{path}"><code>{label}</code></autoref>'


def _resolve(name: str, obj: griffe.Object, pkg: griffe.Module) -> str | None:
    """Full path of a detblocks object named ``name`` as seen from ``obj``, or None."""
    scopes: list[str] = []
    if name.startswith(pkg.name + ".") or name == pkg.name:
        scopes.append("")
    else:
        here: griffe.Object | None = obj
        while here is not None:
            scopes.append(here.path + ".")
            here = here.parent
        scopes.extend(f"{m.path}." for m in pkg.modules.values())
    for scope in scopes:
        path = scope + name
        try:
            target = pkg[path[len(pkg.name) + 1 :]] if path != pkg.name else pkg
        except (KeyError, ValueError, griffe.AliasResolutionError, griffe.CyclicAliasError):
            continue
        if target.is_alias:
            try:
                return target.final_target.path
            except (griffe.AliasResolutionError, griffe.CyclicAliasError):
                return None
        return target.path
    return None
