"""The package's layout: subpackages by area, no import cycle among its modules, modeling/ importable alone."""

import ast
import subprocess
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "ttt_hf"
MODELING = Path(__file__).resolve().parents[1] / "modeling"


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports(path: Path, module: str, top_level_only: bool) -> set[str]:
    """The ttt_hf modules `module` (the file `path`) imports: relative and absolute, `from . import x` included."""
    tree = ast.parse(path.read_text())
    package = module if path.name == "__init__.py" else module.rsplit(".", 1)[0]
    nodes = tree.body if top_level_only else ast.walk(tree)
    found = set()
    for node in nodes:
        if isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parent = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*parent, *([base] if base else [])])
            if base.split(".")[0] != "ttt_hf":
                continue
            found.add(base)
            found |= {f"{base}.{alias.name}" for alias in node.names}
        elif isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names if alias.name.split(".")[0] == "ttt_hf"}
    return found


def graph(top_level_only: bool) -> dict[str, set[str]]:
    files = {module_name(p): p for p in PACKAGE.rglob("*.py")}
    files |= {f"ttt_hf.{module_name(p)}": p for p in MODELING.rglob("*.py")}  # installed as ttt_hf.modeling
    return {
        name: {m for m in imports(path, name, top_level_only) if m in files and m != name}
        for name, path in files.items()
    }


def cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Every strongly connected component of more than one module (Tarjan)."""
    index, low, stack, on_stack, found, counter = {}, {}, [], set(), [], [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on_stack.add(v)
        for w in edges.get(v, ()):
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

    for v in sorted(edges):
        if v not in index:
            visit(v)
    return found


def test_no_module_imports_itself_through_others():
    """Counting imports inside functions too: a lazy import hides a cycle from Python, not from a reader."""
    edges = graph(top_level_only=False)
    assert len(edges) > 40 and "ttt_hf.vision.training" in edges
    # a package's __init__ that gathers its modules is not a cycle of theirs
    edges = {
        v: {w for w in ws if not (edges.get(w) and w == v.rsplit(".", 1)[0] and w in edges)} for v, ws in edges.items()
    }
    assert cycles(edges) == []


def test_the_cycle_finder_finds_a_cycle():
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_the_areas_are_subpackages():
    areas = {p.name for p in PACKAGE.iterdir() if (p / "__init__.py").is_file()}
    assert {"common", "vision", "gpicl", "hub", "bench", "zoo", "demo"} <= areas  # and modeling/, mapped in at install
    top = sorted(p.name for p in PACKAGE.glob("*.py"))
    assert top == ["__init__.py", "cli.py"], top  # everything else lives in an area


def test_a_wheel_holds_every_subpackage():
    """pyproject.toml lists the packages (modeling/ is mapped in): a subpackage missing there is missing from a
    regular (non-editable) install, which the device call uses."""
    tomllib = pytest.importorskip("tomllib")  # Python 3.11+
    listed = set(tomllib.loads((PACKAGE.parent / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"])
    found = {module_name(p.parent / "__init__.py") for p in PACKAGE.rglob("__init__.py")}
    assert listed == found | {"ttt_hf.modeling"}, listed ^ (found | {"ttt_hf.modeling"})


def test_modeling_imports_with_torch_and_transformers_alone():
    """modeling/ travels to the Hub as remote code: it may not import the rest of ttt_hf."""
    for name, deps in graph(top_level_only=False).items():
        if name.startswith("ttt_hf.modeling"):
            assert all(dep.startswith("ttt_hf.modeling") for dep in deps), (name, deps)
    code = "import sys; sys.modules['ttt_hf'] = None; import modeling; print(modeling.__name__)"
    out = subprocess.run([sys.executable, "-c", code], cwd=PACKAGE.parent, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
