"""The package tree keeps its architecture: arrows point down (no import circle, counting imports inside
functions too), plain data imports no simulation, heavy libraries stay in their one package, modules stay
small enough to hold one idea. ``python tests/test_tree.py`` prints the import circles it finds."""

from __future__ import annotations

import ast
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1] / "sweeper"
MAX_LINES = 600


def modules(root: Path = ROOT) -> dict[str, Path]:
    """Module name -> file, for every .py file under ``root`` (packages by their own name)."""
    out = {}
    for path in sorted(root.rglob("*.py")):
        parts = path.relative_to(root.parent).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        out[name] = path
    return out


def imports(path: Path) -> list[str]:
    """Every module named by an import statement anywhere in the file (top level or inside a function);
    ``from a import b`` names ``a.b`` (which resolves to ``a`` when ``b`` is not a module)."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found += [f"{node.module}.{a.name}" for a in node.names]
        elif isinstance(node, ast.Import):
            found += [a.name for a in node.names]
    return found


def import_graph(mods: dict[str, Path]) -> dict[str, set[str]]:
    """sweeper module -> the sweeper modules it imports."""
    def resolve(name: str) -> str | None:
        while name and name not in mods:
            name = name.rpartition(".")[0]
        return name or None

    graph: dict[str, set[str]] = {}
    for name, path in mods.items():
        targets = {resolve(i) for i in imports(path) if i == "sweeper" or i.startswith("sweeper.")}
        graph[name] = {t for t in targets if t and t != name}
    return graph


def circles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan), each sorted."""
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
            comp = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                found.append(sorted(comp))

    sys.setrecursionlimit(max(sys.getrecursionlimit(), 10_000))
    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def test_the_checker_finds_a_circle_through_a_function_level_import(tmp_path: Path) -> None:
    pkg = tmp_path / "sweeper"
    (pkg / "a").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "a" / "__init__.py").write_text("")
    (pkg / "a" / "x.py").write_text("from sweeper.a.y import f\n")
    (pkg / "a" / "y.py").write_text("def f():\n    from sweeper.a import x\n")
    (pkg / "z.py").write_text("import sweeper.a.x\n")
    assert circles(import_graph(modules(pkg))) == [["sweeper.a.x", "sweeper.a.y"]]


def test_no_import_circle() -> None:
    assert circles(import_graph(modules())) == []


def test_plain_data_imports_no_simulation_and_techniques_sit_above_it() -> None:
    graph = import_graph(modules())
    up = ("sweeper.sim", "sweeper.techniques", "sweeper.search", "sweeper.cluster", "sweeper.api", "sweeper.cli")
    for name, targets in graph.items():
        if name.startswith("sweeper.quant"):
            assert not {t for t in targets if t.startswith(up)}, (name, sorted(targets))
        if name.startswith("sweeper.sim"):
            assert not {t for t in targets if t.startswith(("sweeper.techniques", "sweeper.search"))}, name


# The layers of docs/architecture.md, top to bottom (a module may import its own layer and those below it).
# Packages beside the column (config, cost, export, report, tracking, examples) may import no layer above run_step.
LAYERS = (
    ("face", ("sweeper.cli", "sweeper.api", "sweeper.__main__")),
    ("workflow", ("sweeper.search.workflow", "sweeper.search.batch")),
    ("steps", ("sweeper.search",)),
    ("run_step", ("sweeper.search.step", "sweeper.search.evaluate", "sweeper.search.study", "sweeper.pipeline")),
    ("techniques", ("sweeper.techniques",)),
    ("cluster", ("sweeper.cluster",)),
    ("replica", ("sweeper.replica",)),
    ("sim", ("sweeper.sim",)),
    ("quant", ("sweeper.quant",)),
    ("model, eval", ("sweeper.model", "sweeper.eval")),
)


def layer_of(module: str) -> int | None:
    """Index of the layer holding ``module`` (0 = top), by its longest matching prefix; None beside the column."""
    best, depth = None, -1
    for k, (_, prefixes) in enumerate(LAYERS):
        for prefix in prefixes:
            if (module == prefix or module.startswith(prefix + ".")) and prefix.count(".") > depth:
                best, depth = k, prefix.count(".")
    return best


def upward_imports(graph: dict[str, set[str]]) -> list[str]:
    run_step = next(k for k, (name, _) in enumerate(LAYERS) if name == "run_step")
    found = []
    for name, targets in graph.items():
        if name == "sweeper":  # the package's lazy re-exports of the face
            continue
        own = layer_of(name)
        for t in targets:
            theirs = layer_of(t)
            if theirs is None:
                continue
            if (own is not None and theirs < own) or (own is None and theirs < run_step):
                found.append(f"{name} -> {t}")
    return sorted(found)


def test_the_layer_check_finds_an_upward_import() -> None:
    graph = {"sweeper.search.batch": {"sweeper.api"}, "sweeper.sim.quantsim": {"sweeper.quant.encoding"},
             "sweeper.export.qdq": {"sweeper.search.amp.step"}, "sweeper.search.amp.fast": {"sweeper.search.step"}}
    assert upward_imports(graph) == ["sweeper.export.qdq -> sweeper.search.amp.step",
                                     "sweeper.search.batch -> sweeper.api"]


def test_arrows_point_down() -> None:
    assert upward_imports(import_graph(modules())) == []


def test_heavy_libraries_stay_in_their_package() -> None:
    owners = {"mlflow": ("sweeper.tracking",), "ray": ("sweeper.cluster",)}
    for name, path in modules().items():
        for lib, allowed in owners.items():
            uses = [i for i in imports(path) if i == lib or i.startswith(lib + ".")]
            assert not uses or name.startswith(allowed), f"{name} imports {lib}"


def test_modules_hold_one_idea() -> None:
    long = {name: n for name, path in modules().items() if (n := len(path.read_text().splitlines())) > MAX_LINES}
    assert long == {}, f"modules over {MAX_LINES} lines: split them along their concepts"


if __name__ == "__main__":
    for c in circles(import_graph(modules())):
        print(" <-> ".join(c))
