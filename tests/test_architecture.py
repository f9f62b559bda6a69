"""The package layout stays a layered graph (docs/architecture.md).

vocseg's own import graph, read from the source with `ast` (every `import` / `from` statement,
inside functions and `if TYPE_CHECKING:` blocks too), must have no cycle between modules, and no
module may import a private name (`_x`) from another module.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "src" / "vocseg"


def module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def all_modules() -> dict[str, Path]:
    return {module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def imports_of(path: Path, modules: dict[str, Path]) -> list[tuple[str, list[str], int]]:
    """(imported vocseg module, names imported from it, line) for every import in the file."""
    found: list[tuple[str, list[str], int]] = []
    me = module_name(path)
    package = me if path.name == "__init__.py" else me.rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.startswith("vocseg"):
                    found.append((alias.name, [], node.lineno))
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")
                anchor = anchor[: len(anchor) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            if not base.startswith("vocseg"):
                continue
            names = [a.name for a in node.names]
            submodules = [n for n in names if f"{base}.{n}" in modules]
            for n in submodules:  # `from vocseg.pkg import module`
                found.append((f"{base}.{n}", [], node.lineno))
            rest = [n for n in names if n not in submodules]
            if rest:
                found.append((base, rest, node.lineno))
    return found


def import_graph() -> dict[str, set[str]]:
    modules = all_modules()
    graph: dict[str, set[str]] = {m: set() for m in modules}
    for name, path in modules.items():
        for target, _, _ in imports_of(path, modules):
            if target in modules and target != name:
                graph[name].add(target)
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One cycle as a list of modules (first == last), or None. Depth-first search, colours."""
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                return stack[stack.index(nxt):] + [nxt]
            if nxt not in state and (cycle := visit(nxt)):
                return cycle
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (cycle := visit(node)):
            return cycle
    return None


def test_graph_checker_finds_a_cycle() -> None:
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None


def test_no_import_cycle() -> None:
    cycle = find_cycle(import_graph())
    assert cycle is None, "import cycle: " + " -> ".join(cycle or [])


def test_no_private_name_imported_from_another_module() -> None:
    modules = all_modules()
    bad = [
        f"{module_name(path)}:{line} imports {name} from {target}"
        for path in modules.values()
        for target, names, line in imports_of(path, modules)
        for name in names
        if name.startswith("_") and not name.startswith("__")
    ]
    assert not bad, "\n".join(bad)


# Which subpackage may import which (docs/architecture.md). The bottom modules import no vocseg module.
# Listed bottom-up: a layer may import itself and the layers it names, never one above it, so no two
# packages import each other.
BOTTOM = {"errors", "console", "files"}
ALLOWED = {
    "vocseg.errors": set(),
    "vocseg.console": set(),
    "vocseg.files": {"errors"},
    "vocseg.data": BOTTOM | {"data"},
    "vocseg.stack": BOTTOM | {"stack"},
    "vocseg.recipe": BOTTOM | {"data", "stack", "recipe"},
    "vocseg.runs": BOTTOM | {"data", "stack", "recipe", "runs"},
    "vocseg.visualization": BOTTOM | {"data", "visualization"},
    "vocseg.evaluation": BOTTOM | {"data", "stack", "recipe", "runs", "visualization", "evaluation"},
    "vocseg.training": BOTTOM | {"data", "stack", "recipe", "runs", "evaluation", "training"},
    "vocseg.inference": BOTTOM | {"data", "stack", "recipe", "runs", "visualization", "inference"},
    "vocseg.reports": BOTTOM | {"data", "stack", "recipe", "runs", "visualization", "evaluation", "inference", "reports"},
    "vocseg.export": BOTTOM | {"data", "stack", "recipe", "runs", "evaluation", "inference", "export"},
    "vocseg.mmseg_plugin": BOTTOM | {"data", "stack", "recipe", "runs", "evaluation", "training"},
    "vocseg.commands": BOTTOM | {"data", "stack", "recipe", "runs", "visualization", "evaluation", "training", "inference", "reports", "export", "commands"},
    "vocseg.cli": BOTTOM | {"commands"},
    "vocseg.__main__": {"cli"},
}


def test_every_module_has_a_layer() -> None:
    missing = [m for m in all_modules() if m != "vocseg" and layer_of(m) is None]
    assert not missing, "modules outside the layer table: " + ", ".join(missing)


def layer_of(module: str) -> str | None:
    for layer in sorted(ALLOWED, key=len, reverse=True):
        if module == layer or module.startswith(layer + "."):
            return layer
    return None


@pytest.mark.parametrize("layer", sorted(ALLOWED))
def test_layers_import_only_what_they_may(layer: str) -> None:
    graph = import_graph()
    allowed = {f"vocseg.{a}" for a in ALLOWED[layer]}
    bad = [
        f"{src} -> {dst}"
        for src, targets in graph.items()
        if layer_of(src) == layer
        for dst in targets
        if not any(dst == a or dst.startswith(a + ".") for a in allowed) and dst != "vocseg"
    ]
    assert not bad, "\n".join(bad)
