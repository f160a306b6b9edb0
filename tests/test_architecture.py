"""The house's shape: the import contracts of pyproject.toml hold, and no module is in a circle.

``make lint`` runs the same contracts with ``lint-imports``; these tests make ``make test``
fail on a broken contract or a circle too. ``lint-imports`` explains a failure in detail.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from pathlib import Path

import grimp
import pytest
from importlinter.api import read_configuration
from importlinter.application.use_cases import lint_imports

ROOT = Path(__file__).resolve().parents[1]

#: Every contract DESIGN.md asks for; a contract dropped from pyproject.toml fails a test.
CONTRACTS = {
    "The layers: doors (CLI, web) above the root above services and adapters above ports "
    "above domain and media",
    "No import circles between sibling packages or modules, at any depth",
    "Domain, media and ports do no I/O: no web, database, HTTP, socket or vendor library",
    "Only callbridge.web (and the sandbox, which serves the vendors' HTTP) imports FastAPI "
    "and Starlette",
    "Production code never imports the sandbox, except the root (sandbox mode) and the CLI "
    "(demo, sandbox)",
    "The sandbox stands beside the product: it never imports the doors, the root or the services",
}


def circles(imports: Mapping[str, Iterable[str]]) -> list[list[str]]:
    """The import circles of a graph (``module -> modules it imports``), each sorted.

    Tarjan's strongly connected components: every component of more than one module, or
    of one module importing itself, is a circle.
    """
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(module: str) -> None:
        index[module] = low[module] = len(index)
        stack.append(module)
        on_stack.add(module)
        for imported in imports.get(module, ()):
            if imported not in index:
                visit(imported)
                low[module] = min(low[module], low[imported])
            elif imported in on_stack:
                low[module] = min(low[module], index[imported])
        if low[module] == index[module]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == module:
                    break
            if len(component) > 1 or module in imports.get(module, ()):
                found.append(sorted(component))

    for module in sorted(imports):
        if module not in index:
            visit(module)
    return found


def import_map(package: str) -> dict[str, set[str]]:
    """Every module of ``package`` and the modules of ``package`` it imports."""
    graph = grimp.build_graph(package, cache_dir=None)
    return {m: graph.find_modules_directly_imported_by(m) for m in graph.modules}


def test_the_import_contracts_of_pyproject_hold() -> None:
    """Every contract in [tool.importlinter] is kept, and none DESIGN.md asks for is missing."""
    config = str(ROOT / "pyproject.toml")
    names = {contract["name"] for contract in read_configuration(config)["contracts_options"]}
    assert CONTRACTS <= names, f"contracts missing: {CONTRACTS - names}"
    # import-linter prints which imports break a contract (shown when this fails).
    assert lint_imports(config_filename=config, cache_dir=None, no_logo=True)


def test_no_module_of_callbridge_is_in_an_import_circle() -> None:
    """No module imports, directly or through others, a module that imports it back."""
    assert circles(import_map("callbridge")) == []


def test_the_circle_finder_finds_a_circle(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A package whose modules import each other in a ring is reported, and only the ring."""
    package = tmp_path / "ringpkg"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "a.py").write_text("from ringpkg import b\n")
    (package / "b.py").write_text("from ringpkg import c\n")
    (package / "c.py").write_text("from ringpkg import a\n")
    (package / "leaf.py").write_text("from ringpkg import a\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    assert circles(import_map("ringpkg")) == [["ringpkg.a", "ringpkg.b", "ringpkg.c"]]
