"""The package's imports run one way (issue 21).

An AST walk over edge/ (nothing is imported but ``edge`` itself, to find the folder):
every ``import`` and ``from ... import`` anywhere in a module counts, at module level,
inside functions (deferred imports) and under ``if TYPE_CHECKING:`` alike, since each
is a dependency of the code that holds it. It fails

* on any import cycle between modules (strongly connected components of the graph);
* when a module imports from a package in a higher layer, or from another package
  in its own layer (packages side by side do not know each other);
* when a module sits in no layer (a new top-level module has to be placed here on
  purpose: the top level is only the low shared modules, the CLI and ``__main__``);
* when a ``module:function`` string (the CLI's lazily imported commands, the model
  manifest's converters) names a module or function that does not exist.
"""

from __future__ import annotations

import ast
import re
import sys
import tomllib
from collections import defaultdict
from pathlib import Path

import edge

EDGE = Path(edge.__file__).resolve().parent
PROJECT = EDGE.parent

#: Packages from the bottom up: a module may import its own package and any package of
#: a lower layer, nothing else. Packages of one layer are independent of each other.
LAYERS: dict[str, int] = {
    # low shared modules at the top of edge/ (see ROOT_MODULES)
    "edge": 0,
    # sources, generated data, the watchlist, the consoles' web layer: each needs only
    # the shared modules
    "edge.capture": 1,
    "edge.synth": 1,
    "edge.watchlist": 1,
    "edge.web": 1,
    # detectors, crop, OCR, plate formats, the still-image recogniser, models
    "edge.recognition": 2,
    # tracks, the vote, the per-frame pipeline, calibration | hits, messages, outbox, MQTT
    "edge.tracking": 3,
    "edge.delivery": 3,
    # audit trail, read log, retention (over the outbox and the read log)
    "edge.privacy": 4,
    # the car (service, replay, GPS, state, health) | HQ (subscriber, store, list tools)
    "edge.vehicle": 5,
    "edge.hq": 5,
    # benchmarks and the demo
    "edge.bench": 6,
    # entry points
    "edge.cli": 7,
    "edge.__main__": 8,
}

#: The only modules allowed directly under edge/ besides the entry points.
ROOT_MODULES = {
    "edge",
    "edge.config",
    "edge.types",
    "edge.errors",
    "edge.timefmt",
    "edge.platetext",
    "edge.crossboundary",
    "edge.textrules",
    "edge.files",
    "edge.sqlitedb",
    "edge.ids",
    "edge.logs",
    "edge.waits",
}


def module_name(path: Path) -> str:
    parts = list(path.relative_to(EDGE.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


MODULES: dict[str, Path] = {module_name(p): p for p in sorted(EDGE.rglob("*.py"))}


def package_of(module: str) -> str | None:
    """The LAYERS key a module belongs to (the longest one that contains it)."""
    if module in ROOT_MODULES:
        return "edge"
    if module in ("edge.cli", "edge.__main__"):
        return module
    found = [p for p in LAYERS if p != "edge" and (module == p or module.startswith(p + "."))]
    return max(found, key=len) if found else None


def _resolve(module: str, node: ast.ImportFrom) -> str:
    if not node.level:
        return node.module or ""
    base = module.split(".")
    if MODULES[module].name != "__init__.py":
        base = base[:-1]
    base = base[: len(base) - (node.level - 1)]
    return ".".join(base + ([node.module] if node.module else []))


def imports_of(module: str) -> list[tuple[str, int]]:
    """(imported edge module, line) for every import in ``module``, nested ones too."""
    tree = ast.parse(MODULES[module].read_text(encoding="utf-8"), str(MODULES[module]))
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out += [(a.name, node.lineno) for a in node.names if a.name.split(".")[0] == "edge"]
        elif isinstance(node, ast.ImportFrom):
            base = _resolve(module, node)
            if base.split(".")[0] != "edge":
                continue
            for alias in node.names:
                # `from edge.x import y` imports the module edge.x.y when there is one
                sub = f"{base}.{alias.name}"
                out.append((sub if sub in MODULES else base, node.lineno))
    return sorted({(target, line) for target, line in out if target != module})


GRAPH: dict[str, list[tuple[str, int]]] = {m: imports_of(m) for m in MODULES}


def where(module: str, line: int) -> str:
    return f"{MODULES[module].relative_to(PROJECT)}:{line}"


def strongly_connected(graph: dict[str, set[str]]) -> list[list[str]]:
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    limit = sys.getrecursionlimit()
    sys.setrecursionlimit(max(limit, 10 * len(graph) + 100))
    try:
        for v in sorted(graph):
            if v not in index:
                visit(v)
    finally:
        sys.setrecursionlimit(limit)
    return found


def test_every_module_has_a_layer():
    stray = sorted(m for m in MODULES if package_of(m) is None)
    assert not stray, (
        "modules in no layer (place them in a package, or add a low shared module to "
        f"ROOT_MODULES on purpose): {stray}"
    )


def test_no_import_cycles():
    graph = {m: {t for t, _ in GRAPH[m] if t in MODULES} for m in MODULES}
    cycles = strongly_connected(graph)
    lines = []
    for component in cycles:
        inside = set(component)
        lines.append("cycle: " + " <-> ".join(component))
        lines += [
            f"    {where(m, line)}: {m} imports {t}"
            for m in component
            for t, line in sorted(GRAPH[m], key=lambda x: x[1])
            if t in inside
        ]
    assert not cycles, "\n".join(lines)


def test_lower_layers_do_not_import_higher_ones():
    problems = []
    for module, imported in GRAPH.items():
        mine = package_of(module)
        for target, line in imported:
            theirs = package_of(target)
            if mine is None or theirs is None or mine == theirs:
                continue
            if LAYERS[theirs] >= LAYERS[mine]:
                side = "beside" if LAYERS[theirs] == LAYERS[mine] else "above"
                problems.append(
                    f"{where(module, line)}: {module} ({mine}, layer {LAYERS[mine]}) imports "
                    f"{target} ({theirs}, layer {LAYERS[theirs]}: {side} it)"
                )
    assert not problems, "\n".join(problems)


_TARGET = re.compile(r"edge(?:\.[A-Za-z_]\w*)+:[A-Za-z_]\w*")


def _string_targets() -> list[tuple[str, str]]:
    """('edge.pkg.module:function', where) named in code and in the model manifest."""
    out = []
    for module, path in MODULES.items():
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            if (
                isinstance(node, ast.Constant)
                and isinstance(node.value, str)
                and _TARGET.fullmatch(node.value)
            ):
                out.append((node.value, where(module, node.lineno)))
            # the CLI's _lazy("edge.x", "cmd_y")
            if (
                isinstance(node, ast.Call)
                and getattr(node.func, "id", None) == "_lazy"
                and len(node.args) == 2
                and all(isinstance(a, ast.Constant) for a in node.args)
            ):
                module_arg, function_arg = (a.value for a in node.args)
                out.append((f"{module_arg}:{function_arg}", where(module, node.lineno)))
    manifest = PROJECT / "models" / "manifest.toml"
    if manifest.exists():
        for spec in tomllib.loads(manifest.read_text(encoding="utf-8")).get("model", []):
            if spec.get("converter", "").startswith("edge."):
                out.append((spec["converter"], f"models/manifest.toml ({spec['name']})"))
    return out


def test_module_paths_named_in_strings_exist():
    defined: dict[str, set[str]] = defaultdict(set)
    for module, path in MODULES.items():
        tree = ast.parse(path.read_text(encoding="utf-8"))
        defined[module] = {
            n.name
            for n in tree.body
            if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef))
        }
    targets = _string_targets()
    assert targets, "found no module:function strings: has the CLI stopped using _lazy?"
    missing = [
        f"{place}: {target}"
        for target, place in targets
        if target.partition(":")[0] not in MODULES
        or target.partition(":")[2] not in defined[target.partition(":")[0]]
    ]
    assert not missing, "names no existing module:function:\n" + "\n".join(missing)
