"""The web package's layering: no module imports ``web.app`` (the entry
point gunicorn and the tests load), and no import cycle runs through web/,
deferred imports inside functions included."""

from __future__ import annotations

import ast

from tests.conftest import ROOT

WEB = ROOT / "web"


def _imports() -> dict[str, set[str]]:
    """Each web module and the web modules it imports."""
    modules = {f"web.{p.stem}": p for p in WEB.glob("*.py") if p.stem != "__init__"}
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        found: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module == "web":
                found.update(f"web.{alias.name}" for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and node.module:
                found.add(node.module)
            elif isinstance(node, ast.Import):
                found.update(alias.name for alias in node.names)
        graph[name] = found & modules.keys() - {name}
    return graph


def _cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle (its modules in order, the first repeated), or None."""
    done: set[str] = set()

    def walk(name: str, path: list[str]) -> list[str] | None:
        if name in path:
            return [*path[path.index(name) :], name]
        if name in done:
            return None
        for imported in sorted(graph[name]):
            cycle = walk(imported, [*path, name])
            if cycle:
                return cycle
        done.add(name)
        return None

    for name in sorted(graph):
        cycle = walk(name, [])
        if cycle:
            return cycle
    return None


def test_only_entry_points_import_the_app_factory() -> None:
    graph = _imports()
    assert len(graph) > 15
    assert sorted(name for name, imported in graph.items() if "web.app" in imported) == []


def test_no_import_cycle_in_web() -> None:
    assert _cycle(_imports()) is None


def test_a_cycle_would_be_found() -> None:
    assert _cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": set()}) == ["a", "b", "c", "a"]
