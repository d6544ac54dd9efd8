"""Every picture the README and the docs show exists and is one that docs/screenshots.py makes,
so a picture of an old form cannot stay in the docs after the script stops making it."""

from __future__ import annotations

import ast
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "docs" / "screenshots.py"


def _referenced() -> set[str]:
    texts = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
    found: set[str] = set()
    for path in texts:
        found |= set(re.findall(r"images/([\w.-]+\.png)", path.read_text(encoding="utf-8")))
    return found


def _made() -> set[str]:
    """Picture names screenshots.py saves: its literal names and its layout sizes."""
    tree = ast.parse(SCRIPT.read_text(encoding="utf-8"))
    names = {
        node.value
        for node in ast.walk(tree)
        if isinstance(node, ast.Constant)
        and isinstance(node.value, str)
        and re.fullmatch(r"[\w.-]+\.png", node.value)
    }
    sizes = next(
        ast.literal_eval(node.value)
        for node in ast.walk(tree)
        if isinstance(node, ast.Assign)
        and any(isinstance(t, ast.Name) and t.id == "LAYOUT_SIZES" for t in node.targets)
    )
    for width, height in sizes:
        names |= {f"layout-{width}x{height}.png", f"layout-{width}x{height}-segment.png"}
    return names


def test_the_docs_show_only_pictures_the_script_makes_and_they_exist():
    referenced = _referenced()
    assert "overview.png" in referenced  # the README's top picture is found
    assert referenced - _made() == set()
    assert [n for n in sorted(referenced) if not (ROOT / "docs" / "images" / n).is_file()] == []


def test_the_check_sees_a_picture_the_script_does_not_make():
    assert "old-form.png" not in _made()
    assert {"overview.png", "layout-1066x651.png", "field-3-next.png"} <= _made()
