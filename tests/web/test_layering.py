"""The web package's layering: no web module imports ``web.app``, the entry
point that gunicorn and the tests load; the blueprints share what they need
through ``web.resources``.  (Import cycles are import-linter's to find.)"""

from __future__ import annotations

import ast

from tests.conftest import ROOT


def _importers_of_the_app() -> list[str]:
    """The web modules that import ``web.app``, deferred imports included."""
    found = []
    for path in sorted((ROOT / "web").glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if (
                (isinstance(node, ast.ImportFrom) and node.module == "web.app")
                or (isinstance(node, ast.ImportFrom) and node.module == "web"
                    and any(alias.name == "app" for alias in node.names))
                or (isinstance(node, ast.Import)
                    and any(alias.name == "web.app" for alias in node.names))
            ):  # fmt: skip
                found.append(path.stem)
    return found


def test_only_entry_points_import_the_app_factory() -> None:
    assert _importers_of_the_app() == []
