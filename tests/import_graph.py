"""The import graph between Calcrooms' packages; exits 1 if the packages import in a cycle.

Run it from anywhere: `.venv/bin/python tests/import_graph.py` (or `make imports`). Stdlib only.

Every `import x` and `from x import y` of every .py file counts, wherever it is: an import inside
a function is lazy, but still a dependency. Relative imports resolve within their package. Only
statements are seen: string references (`include("rooms.urls")`, INSTALLED_APPS,
`import_module(...)`) are not. An edge A -> B is shown with the first module:line that makes it.
Modules under a `migrations/` folder are scanned and their edges reported, but they do not count
for the cycle check: Django migrations depending on other apps' migrations is normal.

Options: `--modules` also prints the module-level graph; `--root PATH` and `--packages a,b,...`
check another tree (the tests use them to prove the check can fail).
"""

from __future__ import annotations

import argparse
import ast
import itertools
import sys
from pathlib import Path

PACKAGES = ("accounts", "presence", "project", "realtime", "rooms")
Graph = dict[str, dict[str, str]]  # source -> {target: "path:line" of the first import}


def imported(tree: ast.AST, module: str, is_package: bool) -> list[tuple[str, int]]:
    """Absolute dotted names the tree imports (`from x import y` gives `x.y`), in line order."""
    names: list[tuple[str, int]] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names += [(alias.name, node.lineno) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative: `from . import x` in rooms/a.py is rooms.x
                package = module.split(".") if is_package else module.split(".")[:-1]
                if node.level > len(package):
                    continue  # climbs out of the top-level package: not one of ours
                anchor = ".".join(package[: len(package) - node.level + 1])
                base = f"{anchor}.{base}" if base else anchor
            names += [(f"{base}.{alias.name}", node.lineno) for alias in node.names]
    return sorted(names, key=lambda name: name[1])  # ast.walk is breadth-first


def build(root: Path, packages: list[str]) -> tuple[Graph, Graph, Graph]:
    """The package graph of ordinary modules, the one of migrations, and the module graph."""
    files = sorted(f.relative_to(root) for p in packages for f in (root / p).rglob("*.py"))
    modules = {f: ".".join(f.with_suffix("").parts).removesuffix(".__init__") for f in files}
    known = set(modules.values())
    code: Graph = {package: {} for package in packages}
    migrations: Graph = {package: {} for package in packages}
    module_graph: Graph = {}
    for path, module in modules.items():
        tree = ast.parse((root / path).read_text(encoding="utf-8"), filename=str(path))
        graph = migrations if "migrations" in path.parts else code
        for name, line in imported(tree, module, path.name == "__init__.py"):
            if name.split(".")[0] not in packages:
                continue
            target = name  # the longest known module: `from x import f` is x, `import x.y` is x.y
            while target not in known and "." in target:
                target = target.rpartition(".")[0]
            evidence = f"{path.as_posix()}:{line}"
            if target != module:
                module_graph.setdefault(module, {}).setdefault(target, evidence)
            if (package := target.split(".")[0]) != path.parts[0]:
                graph[path.parts[0]].setdefault(package, evidence)
    return code, migrations, module_graph


def shortest_cycle(graph: Graph, start: str) -> list[str] | None:
    """A shortest path from start back to itself (breadth-first), or None."""
    paths, queue = {start: [start]}, [start]
    while queue:
        node = queue.pop(0)
        for target in sorted(graph.get(node, {})):
            if target == start:
                return [*paths[node], start]
            if target not in paths:
                paths[target] = [*paths[node], target]
                queue.append(target)
    return None


def cycles(graph: Graph) -> list[list[str]]:
    """Shortest cycles until every package that is on some cycle is on a reported one."""
    found: list[list[str]] = []
    for start in sorted(graph):
        if all(start not in cycle for cycle in found) and (cycle := shortest_cycle(graph, start)):
            found.append(cycle)
    return found


def show(graph: Graph, prefix: str = "") -> None:
    for source, targets in sorted(graph.items()):
        edges = ", ".join(f"{target} ({evidence})" for target, evidence in sorted(targets.items()))
        print(f"{prefix}{source} -> {edges or '(nothing)'}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", type=Path, default=Path(__file__).resolve().parent.parent)
    parser.add_argument("--packages", default=",".join(PACKAGES), help="comma-separated")
    parser.add_argument("--modules", action="store_true", help="print the module graph too")
    args = parser.parse_args(argv)
    code, migrations, module_graph = build(args.root, args.packages.split(","))
    show(code)
    only_migrations = {
        source: {t: e for t, e in targets.items() if t not in code[source]}
        for source, targets in migrations.items()
    }
    if any(only_migrations.values()):
        print("\nfrom migrations only (not counted for cycles):")
        show({source: targets for source, targets in only_migrations.items() if targets}, "  ")
    if args.modules:
        print("\nmodules:")
        show(module_graph, "  ")
    found = cycles(code)
    for cycle in found:
        steps = [f"{b} ({code[a][b]})" for a, b in itertools.pairwise(cycle)]
        print(f"\ncycle: {cycle[0]} -> " + " -> ".join(steps))
    if not found:
        print("\nno cycles between packages")
    return 1 if found else 0


if __name__ == "__main__":
    sys.exit(main())
