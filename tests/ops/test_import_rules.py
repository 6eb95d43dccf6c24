"""The import rules of the package, checked on its source with ``ast``:

(a) no module uses another module's private (underscore) names, neither by
    ``from m import _x`` nor as ``m._x`` on an imported tourno module: a name
    another module needs is public, or lives where it is needed;
(b) no import inside a function or method under ``tourno/tournaments/``: the
    domain's modules import top-down (common -> notify -> brackets ->
    standings -> progress -> the services), so no cycle needs breaking.

``cli/`` imports lazily on purpose (``--help`` must not import the app) and
(b) does not apply to it.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[2] / "tourno"
NO_FUNCTION_IMPORTS = ("tournaments",)
# Underscore names that are public API: peewee documents ``Model._meta``.
PUBLIC_BY_CONVENTION = frozenset({"_meta"})

# Known offenders in packages other helpers are restructuring (issue 15); each
# entry is (module, "the offending name"), with the owner to fix it. The lead
# shrinks this list as those branches merge. A fixed entry fails the test
# below, so the list cannot go stale.
KNOWN_PRIVATE_USES: dict[tuple[str, str], str] = {}
KNOWN_FUNCTION_IMPORTS: dict[tuple[str, str], str] = {}


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def is_package(path: Path) -> bool:
    return path.name == "__init__.py"


def resolve(path: Path, node: ast.ImportFrom) -> str:
    """The absolute module a ``from ... import`` names."""
    if not node.level:
        return node.module or ""
    base = module_name(path).split(".")
    if not is_package(path):
        base = base[:-1]
    base = base[: len(base) - (node.level - 1)]
    return ".".join([*base, node.module] if node.module else base)


def is_module(name: str) -> bool:
    relative = Path(*name.split(".")[1:]) if "." in name else Path()
    target = PACKAGE / relative
    return name.split(".")[0] == "tourno" and (
        target.with_suffix(".py").is_file() or (target / "__init__.py").is_file()
    )


def private(name: str) -> bool:
    return name.startswith("_") and not (name.startswith("__") and name.endswith("__"))


def private_uses(path: Path, tree: ast.Module) -> list[str]:
    """``from m import _x`` (any other module), and ``name._x`` on a name
    imported from a tourno module (a module, or an object such as ``database``)."""
    found = []
    imported: dict[str, str] = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            source = resolve(path, node)
            for alias in node.names:
                if private(alias.name) and source != module_name(path):
                    found.append(f"{source}.{alias.name}")
                if source.split(".")[0] == "tourno":
                    imported[alias.asname or alias.name] = f"{source}.{alias.name}"
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.split(".")[0] == "tourno":
                    imported[alias.asname or "tourno"] = alias.name if alias.asname else "tourno"
                if any(private(part) for part in alias.name.split(".")):
                    found.append(alias.name)
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and private(node.attr) and node.attr not in PUBLIC_BY_CONVENTION:
            chain = dotted(node.value)
            if chain and chain[0] in imported:
                found.append(".".join([imported[chain[0]], *chain[1:], node.attr]))
    return sorted(set(found))


def dotted(node: ast.expr) -> list[str]:
    """``a.b.c`` as ["a", "b", "c"]; [] for anything but names and attributes."""
    if isinstance(node, ast.Name):
        return [node.id]
    if isinstance(node, ast.Attribute):
        head = dotted(node.value)
        return [*head, node.attr] if head else []
    return []


def function_imports(tree: ast.Module) -> list[str]:
    """``function: imported module`` for each import inside a function or method."""
    found = []
    for fn in ast.walk(tree):
        if not isinstance(fn, (ast.FunctionDef, ast.AsyncFunctionDef)):
            continue
        for node in ast.walk(fn):
            if isinstance(node, ast.Import):
                found += [f"{fn.name}: {alias.name}" for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                found.append(f"{fn.name}: {'.' * node.level}{node.module or ''}")
    return sorted(set(found))


def modules() -> list[Path]:
    return sorted(PACKAGE.rglob("*.py"))


def scan() -> tuple[dict[tuple[str, str], None], dict[tuple[str, str], None]]:
    privates: dict[tuple[str, str], None] = {}
    imports: dict[tuple[str, str], None] = {}
    for path in modules():
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        name = module_name(path)
        for use in private_uses(path, tree):
            privates[(name, use)] = None
        if path.relative_to(PACKAGE).parts[0] in NO_FUNCTION_IMPORTS:
            for use in function_imports(tree):
                imports[(name, use)] = None
    return privates, imports


def test_no_module_uses_another_modules_private_names() -> None:
    privates, _ = scan()
    offenders = sorted(set(privates) - set(KNOWN_PRIVATE_USES))
    assert not offenders, "private names used across modules (make them public or move them):\n" + "\n".join(
        f"  {module}: {use}" for module, use in offenders
    )


def test_no_function_level_imports_in_the_domain() -> None:
    _, imports = scan()
    offenders = sorted(set(imports) - set(KNOWN_FUNCTION_IMPORTS))
    assert not offenders, (
        "imports inside functions under tourno/tournaments/ (import at the top):\n"
        + "\n".join(f"  {module}: {use}" for module, use in offenders)
    )


def test_the_known_exceptions_are_still_there() -> None:
    """An allow-list entry that no longer matches is removed, so the list only shrinks."""
    privates, imports = scan()
    stale = sorted(set(KNOWN_PRIVATE_USES) - set(privates)) + sorted(
        set(KNOWN_FUNCTION_IMPORTS) - set(imports)
    )
    assert not stale, f"fixed, remove from the allow-list: {stale}"


@pytest.mark.parametrize(
    ("source", "rule", "expected"),
    [
        ("from tourno.db import _state\n", "private", ["tourno.db._state"]),
        ("from .common import _lock\n", "private", ["tourno.tournaments.services.common._lock"]),
        ("from tourno import db as tdb\nx = tdb._state\n", "private", ["tourno.db._state"]),
        ("from tourno.db import __all__\nfrom tourno.db import utcnow\n", "private", []),
        ("import os\nx = os._exit\n", "private", []),
        ("import tourno.db\nx = tourno.db._state\n", "private", ["tourno.db._state"]),
        (
            "from tourno.db import database\ndatabase._state.reset()\n",
            "private",
            ["tourno.db.database._state"],
        ),
        ("from peewee import _manual\n", "private", ["peewee._manual"]),
        ("from tourno.tournaments.models import Match\nMatch._meta.table_name\n", "private", []),
        ("def f():\n    from tourno import db\n", "function", ["f: tourno"]),
        ("class C:\n    def m(self):\n        import json\n", "function", ["m: json"]),
        ("import json\n\ndef f():\n    return json\n", "function", []),
    ],
)
def test_the_scan_finds_what_it_should(source: str, rule: str, expected: list[str]) -> None:
    """The checker itself, on small sources (as if in tourno/tournaments/services/x.py)."""
    path = PACKAGE / "tournaments" / "services" / "x.py"
    tree = ast.parse(source)
    found = private_uses(path, tree) if rule == "private" else function_imports(tree)
    assert found == expected
