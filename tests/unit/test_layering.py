"""The layers, checked from the source: who may import whom, and what a pure module may do.

Walks every module of sapd and madcap with ast (module-level and function-level imports;
imports under ``if TYPE_CHECKING:`` are for the type checker only and are left out) and
fails on an import cycle, on madcap importing sapd beyond sapd.plumbing, on sapd.plumbing
importing the rest of sapd, and on a pure module importing I/O or concurrency machinery,
importing a module that is not pure, or reading a clock. The last test builds a small
package that breaks every rule, so that each check is seen to fail.
"""

from __future__ import annotations

import ast
from dataclasses import dataclass, field
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("sapd", "madcap")

PURE = (
    "sapd.wire", "sapd.sdp", "sapd.scopes", "sapd.pcap", "sapd.records", "sapd.lifecycle",
    "sapd.signing", "sapd.trust", "sapd.announce.schedule", "sapd.plumbing.adminscope",
    "sapd.plumbing.errors", "sapd.streaminfo", "sapd.conflicts", "sapd.history",
    "sapd.web.pages", "sapd.plumbing.html", "madcap.wire", "madcap.pool", "madcap.leases",
    "madcap.server", "sapd.bridges.ldap_entries", "sapd.bridges.rtsp",
    "sapd.bridges.ravenna_core",
    "sapd.plumbing.groupranges",
    "madcap.avoided", "sapd.bridges.nmos_resources", "sapd.bridges.nmos_registration",
)
# Packages whose __init__ holds only a docstring: importing a pure module through them
# runs nothing else.
PURE_PACKAGES = ("sapd", "madcap", "sapd.announce", "sapd.plumbing", "sapd.bridges")
IMPURE_IMPORTS = ("asyncio", "sqlite3", "threading", "selectors", "aiohttp")
CLOCKS = {("time", "time"), ("time", "time_ns"), ("time", "monotonic"),
          ("time", "monotonic_ns"), ("time", "perf_counter"), ("time", "perf_counter_ns"),
          ("time", "localtime"), ("time", "gmtime"), ("datetime", "now"),
          ("datetime", "utcnow"), ("datetime", "today"), ("date", "today")}


@dataclass
class Module:
    name: str
    path: Path
    imports: set[str] = field(default_factory=set)  # everything named in an import
    clock_reads: list[str] = field(default_factory=list)


def _module_name(root: Path, path: Path) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def _walk(node: ast.AST) -> list[ast.AST]:
    """Every node, except what sits under ``if TYPE_CHECKING:``."""
    found: list[ast.AST] = []
    stack = [node]
    while stack:
        current = stack.pop()
        found.append(current)
        for child in ast.iter_child_nodes(current):
            if isinstance(child, ast.If) and _is_type_checking(child):
                stack.extend(child.orelse)
                continue
            stack.append(child)
    return found


def _resolve(module: str, is_package: bool, level: int, target: str | None) -> str:
    if level == 0:
        return target or ""
    base = module.split(".")
    base = base if is_package else base[:-1]
    base = base[:len(base) - (level - 1)]
    return ".".join([*base, target] if target else base)


def scan(root: Path, packages: tuple[str, ...] = PACKAGES) -> dict[str, Module]:
    modules: dict[str, Module] = {}
    for package in packages:
        for path in sorted((root / package).rglob("*.py")):
            name = _module_name(root, path)
            modules[name] = Module(name, path)
    for module in modules.values():
        tree = ast.parse(module.path.read_text(), str(module.path))
        is_package = module.path.name == "__init__.py"
        clock_names: dict[str, tuple[str, str]] = {}  # from time import monotonic as m
        for node in _walk(tree):
            if isinstance(node, ast.Import):
                module.imports.update(alias.name for alias in node.names)
            elif isinstance(node, ast.ImportFrom):
                source = _resolve(module.name, is_package, node.level, node.module)
                submodules = {f"{source}.{a.name}" for a in node.names} & modules.keys()
                module.imports |= submodules
                if len(submodules) < len(node.names):  # names defined in source itself
                    module.imports.add(source)
                for alias in node.names:
                    if (source.rpartition(".")[2], alias.name) in CLOCKS:
                        clock_names[alias.asname or alias.name] = (source, alias.name)
            elif isinstance(node, ast.Attribute) and \
                    isinstance(node.value, ast.Name | ast.Attribute):
                owner = node.value.id if isinstance(node.value, ast.Name) else node.value.attr
                if (owner, node.attr) in CLOCKS:
                    module.clock_reads.append(f"{owner}.{node.attr} (line {node.lineno})")
        for node in _walk(tree):
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and \
                    node.func.id in clock_names:
                owner, attr = clock_names[node.func.id]
                module.clock_reads.append(f"{owner}.{attr} (line {node.lineno})")
    return modules


def internal_edges(modules: dict[str, Module]) -> dict[str, set[str]]:
    """Module -> the project modules it imports (a package counts as its __init__)."""
    return {name: {i for i in module.imports if i in modules and i != name}
            for name, module in modules.items()}


def import_cycles(modules: dict[str, Module]) -> list[list[str]]:
    """Strongly connected groups of more than one module (Tarjan)."""
    edges = internal_edges(modules)
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    groups: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for other in sorted(edges[node]):
            if other not in index:
                visit(other)
                low[node] = min(low[node], low[other])
            elif other in on_stack:
                low[node] = min(low[node], index[other])
        if low[node] == index[node]:
            group = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                group.append(member)
                if member == node:
                    break
            if len(group) > 1:
                groups.append(sorted(group))
    for name in sorted(edges):
        if name not in index:
            visit(name)
    return groups


def _under(name: str, prefix: str) -> bool:
    return name == prefix or name.startswith(prefix + ".")


def madcap_breaches(modules: dict[str, Module]) -> list[str]:
    return [f"{name} imports {i}" for name, module in sorted(modules.items())
            if _under(name, "madcap") for i in sorted(module.imports)
            if _under(i, "sapd") and not _under(i, "sapd.plumbing")]


def plumbing_breaches(modules: dict[str, Module]) -> list[str]:
    return [f"{name} imports {i}" for name, module in sorted(modules.items())
            if _under(name, "sapd.plumbing") for i in sorted(module.imports)
            if _under(i, "sapd") and not _under(i, "sapd.plumbing")]


def purity_breaches(modules: dict[str, Module], name: str,
                    pure: tuple[str, ...] = PURE,
                    pure_packages: tuple[str, ...] = PURE_PACKAGES) -> list[str]:
    module = modules[name]
    found = [f"imports {i}" for i in sorted(module.imports)
             if any(_under(i, banned) for banned in IMPURE_IMPORTS)]
    found += [f"imports {i}, which is not pure" for i in sorted(internal_edges(modules)[name])
              if i not in pure and i not in pure_packages]
    found += [f"reads the clock: {read}" for read in module.clock_reads]
    return found


@pytest.fixture(scope="module")
def modules() -> dict[str, Module]:
    return scan(ROOT)


def test_no_import_cycles(modules: dict[str, Module]) -> None:
    assert import_cycles(modules) == []


def test_madcap_imports_nothing_of_sapd_but_plumbing(modules: dict[str, Module]) -> None:
    assert madcap_breaches(modules) == []


def test_plumbing_imports_nothing_of_the_rest_of_sapd(modules: dict[str, Module]) -> None:
    assert plumbing_breaches(modules) == []


@pytest.mark.parametrize("name", PURE)
def test_pure_module_does_no_io_and_reads_no_clock(modules: dict[str, Module],
                                                   name: str) -> None:
    assert name in modules, f"{name} is listed as pure but does not exist"
    assert purity_breaches(modules, name) == []


def test_every_rule_fails_when_broken(tmp_path: Path) -> None:
    """A package that breaks each rule once: every check names the breach."""
    files = {
        "sapd/__init__.py": "",
        "sapd/plumbing/__init__.py": "",
        "sapd/plumbing/bad.py": "from sapd import engine\n",
        "sapd/engine.py": "import asyncio\nfrom time import monotonic\nfrom sapd import store\n"
                          "def f():\n    from sapd import loop\n    return monotonic()\n",
        "sapd/store.py": "import time\nx = time.time()\n",
        "sapd/loop.py": "from . import engine\n",
        "sapd/typed.py": "from typing import TYPE_CHECKING\n"
                         "if TYPE_CHECKING:\n    from sapd import engine\n",
        "madcap/__init__.py": "",
        "madcap/server.py": "from sapd.engine import x\nfrom sapd.plumbing import bad\n",
    }
    for relative, text in files.items():
        (tmp_path / relative).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / relative).write_text(text)
    found = scan(tmp_path)
    assert import_cycles(found) == [["sapd.engine", "sapd.loop"]]
    assert madcap_breaches(found) == ["madcap.server imports sapd.engine"]
    assert plumbing_breaches(found) == ["sapd.plumbing.bad imports sapd.engine"]
    breaches = purity_breaches(found, "sapd.engine", pure=("sapd.engine",))
    assert breaches == ["imports asyncio", "imports sapd.loop, which is not pure",
                        "imports sapd.store, which is not pure",
                        "reads the clock: time.monotonic (line 6)"]
    assert purity_breaches(found, "sapd.store", pure=("sapd.store",)) == [
        "reads the clock: time.time (line 2)"]
    assert "sapd.engine" not in internal_edges(found)["sapd.typed"]
