"""The README's Python examples run as written and print what the README shows."""

from __future__ import annotations

import contextlib
import io
import re
from pathlib import Path

import pytest

pytestmark = pytest.mark.cpu_only("README examples print CPU tensors")

README = Path(__file__).resolve().parents[1] / "README.md"
BLOCK = re.compile(r"```python\n(.*?)```(?:\s*\n+Output:\s*\n+```\n(.*?)```)?", re.S)


def _examples() -> list[tuple[str, str | None]]:
    return [(m.group(1), m.group(2)) for m in BLOCK.finditer(README.read_text())]


def test_readme_has_examples():
    assert len(_examples()) >= 1


@pytest.mark.parametrize("index", range(len(_examples())))
def test_readme_example_runs(index):
    code, expected = _examples()[index]
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        exec(compile(code, f"README.md example {index}", "exec"), {"__name__": "__readme__"})
    if expected is not None:
        assert out.getvalue().strip() == expected.strip()
