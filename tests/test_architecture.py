"""The shape of the package (docs/architecture.md): role packages, imports pointing down, no circles."""

import ast
import re
import subprocess
import sys
from collections import defaultdict
from pathlib import Path

import pytest

TESTS = Path(__file__).resolve().parent
SRC = TESTS.parent / "src"
PACKAGE = SRC / "restyle"
MAX_TOP_MODULES = 10
MAX_LINES = 500
MAX_FUNCTION_LINES = 80  # "create_app and every function under 80 lines" (issue 21)
# The functions still that long, to split where it can be done without contortion; none may join them.
LONG_FUNCTIONS = {
    "cli/main.py:build_parser",
    "networks/training.py:fit",
    "video/pipeline.py:stylize_video",
}


def import_graph():
    grimp = pytest.importorskip("grimp")  # import-linter's own graph builder
    graph = grimp.build_graph("restyle")
    return {m: set(graph.find_modules_directly_imported_by(m)) for m in graph.modules}


def cycles(edges):
    """Tarjan's strongly connected components of more than one module (or a module importing itself)."""
    index, low, stack, on_stack, found = {}, {}, [], set(), []

    def visit(v):
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(edges.get(v, ())):
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
            if len(component) > 1 or v in edges.get(v, ()):
                found.append(sorted(component))

    sys.setrecursionlimit(max(sys.getrecursionlimit(), 10_000))
    for v in sorted(edges):
        if v not in index:
            visit(v)
    return found


def test_cycle_finder_finds_a_circle():
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert cycles({"a": {"b"}, "b": set()}) == []


def test_no_import_circles():
    """No two modules import each other, directly or round a longer circle (lazy imports count too)."""
    assert cycles(import_graph()) == []


def test_imports_point_down():
    """pyproject.toml's import-linter contracts: the exhaustive layers of role packages, and a
    configuration and layer table that load without torch."""
    root = SRC.parent
    lint = Path(sys.executable).parent / "lint-imports"
    p = subprocess.run([str(lint), "--no-cache"], cwd=root, capture_output=True, text=True,
                       env={"PYTHONPATH": str(SRC), "PATH": "/usr/bin:/bin"})
    assert p.returncode == 0 and "2 kept, 0 broken" in p.stdout, p.stdout[-2000:] + p.stderr


def test_few_modules_at_the_top_and_no_long_files():
    top = sorted(p.name for p in PACKAGE.glob("*.py"))
    assert len(top) <= MAX_TOP_MODULES, top
    long = {str(p.relative_to(SRC)): n for p in PACKAGE.rglob("*.py")
            if (n := len(p.read_text(encoding="utf-8").splitlines())) > MAX_LINES}
    assert long == {}


def test_functions_are_short():
    long = set()
    for p in PACKAGE.rglob("*.py"):
        for node in ast.walk(ast.parse(p.read_text(encoding="utf-8"))):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                if node.end_lineno - node.lineno + 1 >= MAX_FUNCTION_LINES:
                    long.add(f"{p.relative_to(PACKAGE).as_posix()}:{node.name}")
    assert long - LONG_FUNCTIONS == set()


# --- the tests' own house: shared fixtures in conftest.py, helpers in *util.py / tinynets.py ------------


def test_no_test_module_imports_another():
    """Shared helpers live in conftest.py or a helper module; a test module (or a script it runs) never imports one."""
    pattern = re.compile(r"^\s*(?:from|import)\s+(test_\w+)", re.MULTILINE)
    found = {p.name: pattern.findall(p.read_text(encoding="utf-8")) for p in sorted(TESTS.glob("*.py"))}
    assert {name: mods for name, mods in found.items() if mods} == {}


def fixture_names(path: Path):
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.FunctionDef):
            for d in node.decorator_list:
                target = d.func if isinstance(d, ast.Call) else d
                if ast.unparse(target) in ("pytest.fixture", "fixture"):
                    yield node.name


def test_each_fixture_name_means_one_thing():
    """A fixture is defined once in tests/: a shared one in conftest.py, another under a name of its own."""
    where = defaultdict(list)
    for p in sorted(TESTS.glob("*.py")):
        for name in fixture_names(p):
            where[name].append(p.name)
    assert {name: files for name, files in where.items() if len(files) > 1} == {}
