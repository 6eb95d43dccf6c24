"""The direction of imports between Tourno's packages (docs/architecture.md).

Data flows one way: cli -> api / jobs -> tournaments -> mail -> accounts ->
db, with the queue engine beside the domain and knowing nothing about it.
This scan reads every import in ``tourno/`` (at module level and inside
functions alike) and fails on one that goes against that direction.
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2] / "tourno"

#: Package (or top-level module) -> what it may import besides itself.
#: ``tourno`` is the package's own ``__init__`` (setup and version).
BASE = {"errors", "config", "signals", "systemd"}
ALLOWED: dict[str, set[str]] = {
    "errors": set(),
    "config": set(),
    "signals": set(),
    "systemd": set(),
    "db": {"errors"},
    "accounts": {"db", "errors"},
    "buckets": {"db", "errors"},
    "queue": {"buckets", "db"} | BASE,
    "mail": {"accounts", "buckets", "db"} | BASE,
    "scheduler": {"queue", "db"} | BASE,
    "tournaments": {"accounts", "mail", "queue", "db"} | BASE,
    "demo": {"tournaments", "accounts", "queue", "db"} | BASE,
    "jobs": {"tournaments", "mail", "queue", "scheduler", "accounts", "demo", "db"} | BASE,
    "dashboard": {"tournaments", "mail", "queue", "scheduler", "accounts", "db"} | BASE,
    "api": {
        "dashboard",
        "tournaments",
        "mail",
        "queue",
        "scheduler",
        "accounts",
        "db",
        "migrations",
        "tourno",
    }
    | BASE,
    "doctor": {"tournaments", "mail", "queue", "scheduler", "accounts", "db", "migrations", "tourno"} | BASE,
    "migrations": {"db"} | BASE,
    "tourno": {"queue", "db"} | BASE,
}
#: The command line is the top: it may import everything.
TOP = {"cli", "__main__"}


def _package(module: str) -> str | None:
    parts = module.split(".")
    if parts[0] != "tourno":
        return None
    return parts[1] if len(parts) > 1 else "tourno"


def _imports(path: Path) -> list[tuple[int, str]]:
    """(line, imported tourno module) for every import in ``path``;
    ``from tourno import db`` counts as importing ``tourno.db``."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            if node.module == "tourno":
                found += [(node.lineno, f"tourno.{alias.name}") for alias in node.names]
            else:
                found.append((node.lineno, node.module))
    return found


def _violations() -> list[str]:
    out = []
    for path in sorted(ROOT.rglob("*.py")):
        rel = path.relative_to(ROOT.parent).with_suffix("")
        source = _package(".".join(rel.parts).removesuffix(".__init__"))
        if source is None or source in TOP:
            continue
        allowed = ALLOWED.get(source)
        for line, module in _imports(path):
            target = _package(module)
            if target is None or target == source:
                continue
            if allowed is None or target not in allowed:
                out.append(f"{rel}.py:{line} ({source}) imports {module} ({target})")
    return out


def test_packages_import_only_downward():
    assert _violations() == []


def test_every_package_has_a_rule():
    packages = {p.name for p in ROOT.iterdir() if p.is_dir() and (p / "__init__.py").exists()}
    modules = {p.stem for p in ROOT.glob("*.py") if p.stem != "__init__"}
    assert packages | modules <= set(ALLOWED) | TOP


def test_the_scan_sees_a_wrong_import(tmp_path):
    # The rule itself can fail: a queue module importing the domain is caught.
    bad = tmp_path / "bad.py"
    bad.write_text("def f():\n    from tourno.tournaments import services\n")
    assert _imports(bad) == [(2, "tourno.tournaments")]
    assert "tournaments" not in ALLOWED["queue"]
