"""The documentation cannot rot.

* Every tutorial script in ``examples/`` runs and prints exactly what its page shows.
* Every ``python`` code block of the pages runs; a ``text`` block right after one is
  its expected output. (``py`` blocks, e.g. GluonCV code, are shown but not run.)
* The migration guide has a row for every class of GluonCV's ``gluoncv.nn`` API page
  and for every detblocks class, and the calls it shows use real arguments.
* The API pages cover every module, and every public class and function has an
  example in its docstring (the examples themselves run as doctests).
* The site builds in strict mode, without resources from the network.
"""

from __future__ import annotations

import contextlib
import importlib
import inspect
import io
import math
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import FIXTURES, ROOT

pytestmark = pytest.mark.cpu_only("documentation examples print CPU tensors")

DOCS = ROOT / "docs"
EXAMPLES = ROOT / "examples"
API_REFERENCE = FIXTURES.parents[1] / "reference" / "gluoncv_nn_api.txt"

MODULES = ("bbox", "coder", "matcher", "sampler", "predictor", "feature")

# The classes of GluonCV's gluoncv.nn API page (reference/gluoncv_nn_api.txt), by module.
GLUONCV_CLASSES = {
    "bbox": {
        "BBoxArea",
        "BBoxBatchIOU",
        "BBoxCenterToCorner",
        "BBoxClipToImage",
        "BBoxCornerToCenter",
        "BBoxSplit",
    },
    "coder": {
        "MultiClassDecoder",
        "MultiClassEncoder",
        "MultiPerClassDecoder",
        "NormalizedBoxCenterDecoder",
        "NormalizedBoxCenterEncoder",
        "NormalizedPerClassBoxCenterEncoder",
        "SigmoidClassEncoder",
    },
    "feature": {"FeatureExpander", "FeatureExtractor"},
    "matcher": {"BipartiteMatcher", "CompositeMatcher", "MaximumMatcher"},
    "predictor": {"ConvPredictor", "FCPredictor"},
    "sampler": {"NaiveSampler", "OHEMSampler", "QuotaSampler", "QuotaSamplerOp", "QuotaSamplerProp"},
}

FENCE = re.compile(r"^```(?P<info>[^\n`]*)\n(?P<body>.*?)^```[ \t]*$", re.M | re.S)


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT / "src"), env.get("PYTHONPATH")]))
    return env


def _pages() -> list[Path]:
    return sorted(p for p in DOCS.rglob("*.md") if "api" not in p.relative_to(DOCS).parts)


def _blocks(text: str) -> list[tuple[str, str, int, int]]:
    """(info string, body, start, end) of every fenced block."""
    return [(m["info"].strip(), m["body"], m.start(), m.end()) for m in FENCE.finditer(text)]


def _lines(text: str) -> list[str]:
    return [line.rstrip() for line in text.strip("\n").splitlines()]


_NUMBER = re.compile(r"-?\d+\.\d+(?:e[-+]?\d+)?")


def _same_output(printed: str, shown: str) -> bool:
    """Line by line, the same text; decimal numbers equal to 1e-3 relative (summation order
    may differ in the last bits between machines)."""
    a, b = _lines(printed), _lines(shown)
    if len(a) != len(b):
        return False
    for x, y in zip(a, b):
        if _NUMBER.sub("#", x) != _NUMBER.sub("#", y):
            return False
        for u, v in zip(_NUMBER.findall(x), _NUMBER.findall(y)):
            if not math.isclose(float(u), float(v), rel_tol=1e-3, abs_tol=1e-4):
                return False
    return True


# ----------------------------------------------------------------------------- tutorials
def _tutorial_page(script: Path) -> Path:
    include = f'--8<-- "examples/{script.name}"'
    pages = [p for p in (DOCS / "tutorials").glob("*.md") if include in p.read_text()]
    assert len(pages) == 1, f"{script.name} must be included by exactly one tutorial page, found {pages}"
    return pages[0]


@pytest.mark.parametrize("script", sorted(EXAMPLES.glob("*.py")), ids=lambda p: p.stem)
def test_tutorial_runs_and_prints_what_its_page_shows(script, tmp_path):
    page = _tutorial_page(script)
    args = [sys.executable, str(script)]
    if script.stem == "export_decoder_onnx":
        args.append(str(tmp_path / "decoder.onnx"))
    proc = subprocess.run(args, cwd=ROOT, env=_env(), capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, f"{script.name} failed:\n{proc.stdout}\n{proc.stderr}"
    shown = next(body for info, body, _, _ in _blocks(page.read_text()) if info == "text")
    assert _same_output(proc.stdout, shown), (
        f"{page.name} shows an output that {script.name} does not print:\n{proc.stdout}"
    )
    if script.stem == "export_decoder_onnx":
        assert (tmp_path / "decoder.onnx").stat().st_size > 0


# ----------------------------------------------------------------------------- page code
def _page_cases() -> list[Path]:
    return [p for p in _pages() if any(info == "python" for info, *_ in _blocks(p.read_text()))]


@pytest.mark.parametrize("page", _page_cases(), ids=lambda p: str(p.relative_to(DOCS)))
def test_page_code_runs_and_prints_what_the_page_shows(page):
    text = page.read_text()
    blocks = _blocks(text)
    namespace: dict[str, object] = {"__name__": f"docs_{page.stem}"}
    for k, (info, body, _, end) in enumerate(blocks):
        if info != "python":
            continue
        out = io.StringIO()
        with contextlib.redirect_stdout(out):
            exec(compile(body, f"{page.relative_to(ROOT)} block {k}", "exec"), namespace)  # noqa: S102
        nxt = blocks[k + 1] if k + 1 < len(blocks) else None
        if nxt is not None and nxt[0] == "text" and not text[end : nxt[2]].strip():
            assert _same_output(out.getvalue(), nxt[1]), (
                f"{page.name}, block {k}: printed output differs:\n{out.getvalue()}"
            )


# ----------------------------------------------------------------------------- migration guide
def _gluoncv_api_classes() -> dict[str, set[str]]:
    """Class names per module, parsed from GluonCV's API page."""
    text = API_REFERENCE.read_text()
    found: dict[str, set[str]] = {}
    for module, name in re.findall(r"^class\s*\ngluoncv\.nn\.(\w+)\.\s*\n(\w+)", text, re.M):
        found.setdefault(module, set()).add(name)
    return found


def test_gluoncv_class_list_matches_the_api_page():
    if not API_REFERENCE.exists():
        pytest.skip(f"GluonCV API page not found at {API_REFERENCE}")
    assert _gluoncv_api_classes() == GLUONCV_CLASSES


def _migration_rows() -> list[list[str]]:
    rows = []
    for line in (DOCS / "migration.md").read_text().splitlines():
        if line.startswith("| `gluoncv.nn."):
            cells = [c.strip() for c in re.split(r"(?<!\\)\|", line.strip())[1:-1]]
            assert len(cells) == 3, f"migration row must have 3 cells: {line[:80]}"
            rows.append(cells)
    return rows


def _beyond_gluoncv_rows() -> list[list[str]]:
    """Rows of the tables that map other libraries (ultralytics, DETR, mmdet, SciPy) to
    detblocks: three cells, a ``detblocks.`` call in the second."""
    rows = []
    for line in (DOCS / "migration.md").read_text().splitlines():
        if not line.startswith("| ") or line.startswith("| `gluoncv.nn."):
            continue
        cells = [c.strip() for c in re.split(r"(?<!\\)\|", line.strip())[1:-1]]
        if len(cells) == 3 and "`detblocks." in cells[1]:
            rows.append(cells)
    return rows


def test_migration_table_has_a_row_for_every_gluoncv_class():
    rows = _migration_rows()
    covered: dict[str, set[str]] = {}
    for gluon, _, _ in rows:
        module, name = re.match(r"`gluoncv\.nn\.(\w+)\.(\w+)", gluon).groups()
        covered.setdefault(module, set()).add(name)
    for module, names in GLUONCV_CLASSES.items():
        missing = names - covered.get(module, set())
        assert not missing, f"docs/migration.md has no row for gluoncv.nn.{module}: {sorted(missing)}"
    assert len(rows) == sum(len(v) for v in covered.values()), "a GluonCV class has two rows"


def _public_classes(module: str) -> set[str]:
    mod = importlib.import_module(f"detblocks.{module}")
    names = {n for n in mod.__all__ if inspect.isclass(getattr(mod, n))}
    if module == "sampler":
        names.add("QuotaSamplerOp")  # GluonCV's class, a registered operator here
    return names


def test_migration_table_has_a_row_for_every_detblocks_class():
    shown = set()
    for _, ours, _ in _migration_rows() + _beyond_gluoncv_rows():
        shown.update(re.findall(r"`detblocks\.(\w+)\.(\w+)\(", ours))
    for module in MODULES:
        missing = {n for n in _public_classes(module) if (module, n) not in shown}
        assert not missing, f"docs/migration.md has no row for detblocks.{module}: {sorted(missing)}"


def _argument_names(args: str) -> list[str]:
    """``"a, b=1, c=(1, 2), ..."`` -> ``["a", "b", "c"]``."""
    names, depth, current = [], 0, ""
    for ch in args + ",":
        if ch in "([{":
            depth += 1
        elif ch in ")]}":
            depth -= 1
        if ch == "," and depth == 0:
            token = current.split("=")[0].strip()
            if token and token != "...":
                names.append(token)
            current = ""
        else:
            current += ch
    return names


def _call_groups(code: str) -> list[str]:
    """The parenthesised groups following the callee in ``f(a)(b)``."""
    groups, depth, start = [], 0, None
    for i, ch in enumerate(code):
        if ch == "(":
            if depth == 0:
                start = i + 1
            depth += 1
        elif ch == ")":
            depth -= 1
            if depth == 0:
                groups.append(code[start:i])
                if code[i + 1 : i + 2] != "(":
                    break
    return groups


def test_migration_table_shows_real_arguments():
    for _, ours, _ in _migration_rows() + _beyond_gluoncv_rows():
        for module, name, rest in re.findall(r"`detblocks\.(\w+)\.(\w+)(\([^`]*)`", ours):
            obj = getattr(importlib.import_module(f"detblocks.{module}"), name)
            groups = _call_groups(rest)
            # A registered custom operator keeps its Python function as ``_init_fn``.
            params = inspect.signature(getattr(obj, "_init_fn", obj)).parameters
            unknown = [a for a in _argument_names(groups[0]) if a not in params]
            assert not unknown, f"detblocks.{module}.{name} has no arguments {unknown}"
            if len(groups) > 1:
                forward = inspect.signature(obj.forward).parameters
                unknown = [a for a in _argument_names(groups[1]) if a not in forward]
                assert not unknown, f"detblocks.{module}.{name}.forward has no arguments {unknown}"


# ----------------------------------------------------------------------------- API pages
def test_api_pages_cover_every_module():
    nav = (ROOT / "mkdocs.yml").read_text()
    for module in (*MODULES, "conventions"):
        page = DOCS / "api" / f"{module}.md"
        assert f"::: detblocks.{module}" in page.read_text(), f"{page} must render detblocks.{module}"
        assert f"api/{module}.md" in nav, f"mkdocs.yml nav must list api/{module}.md"
    assert "set_value_checks" in (DOCS / "api" / "index.md").read_text()


@pytest.mark.parametrize("module", (*MODULES, "conventions"))
def test_every_public_class_and_function_has_an_example(module):
    mod = importlib.import_module(f"detblocks.{module}")
    module_doc = inspect.getdoc(mod) or ""
    missing = []
    for name in mod.__all__:
        obj = getattr(mod, name)
        if not (inspect.isclass(obj) or inspect.isfunction(obj) or callable(obj)):
            continue  # constants are documented by their comment
        doc = inspect.getdoc(obj) or ""
        if ">>>" not in doc and not (">>>" in module_doc and name in module_doc):
            missing.append(name)
    assert not missing, f"detblocks.{module}: no example in the docstring of {missing}"


# ----------------------------------------------------------------------------- the site
def test_site_builds_strictly_and_offline(tmp_path):
    mkdocs = shutil.which("mkdocs", path=str(Path(sys.executable).parent)) or shutil.which("mkdocs")
    if mkdocs is None:
        pytest.skip("mkdocs is not installed (pip install -e '.[docs]')")
    site = tmp_path / "site"
    env = _env() | {"NO_MKDOCS_2_WARNING": "1"}
    proc = subprocess.run(
        [mkdocs, "build", "--strict", "--quiet", "--site-dir", str(site)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    for page in ("index", "migration", "from-torchvision", "api/sampler", "tutorials/ssd"):
        assert (site / page / "index.html").is_file() if page != "index" else (site / "index.html").is_file()
    html = "\n".join(p.read_text() for p in site.rglob("*.html"))
    assert "fonts.googleapis.com" not in html and "fonts.gstatic.com" not in html
    # Every docstring role that names a detblocks object became a link.
    assert not re.search(r'<span title="detblocks\.[^"]*"><code>', html), "unresolved cross-reference"


def test_overview_table_lists_every_public_block_and_function():
    rows = {}
    for line in (DOCS / "index.md").read_text().splitlines():
        head = re.match(r"\| \[`detblocks(?:\.(\w+))?`\]\(api/", line)
        if head:
            rows[head.group(1) or ""] = set(re.findall(r"`(\w+)`", line.split("|", 2)[2]))
    for module in (*MODULES, "conventions"):
        mod = importlib.import_module(f"detblocks.{module}")
        public = {n for n in mod.__all__ if inspect.isclass(getattr(mod, n)) or callable(getattr(mod, n))}
        shown = rows.get(module, set())
        assert public <= shown, f"docs/index.md: detblocks.{module} row lacks {sorted(public - shown)}"
        unknown = {n for n in shown if not hasattr(mod, n)}
        assert not unknown, f"docs/index.md: detblocks.{module} has no {sorted(unknown)}"
