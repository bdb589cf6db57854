"""The layout's rules (docs/architecture.md), enforced.

- Dependency rule: core <- labels <- {dft, nn} <- {inference, training} <- cli, checked on
  the imports at module level; dft and nn never import each other there.
- Boundaries, checked in fresh interpreters: rhosr.core and rhosr.labels load neither torch
  nor PySCF, rhosr.nn/training/inference never load PySCF, rhosr.dft does not load torch.
- No import circle at module level, no private name imported across modules, no module over
  400 lines, no function over 80 lines.
- ``rhosr --help`` loads neither torch nor PySCF and answers within 0.5 s.
"""

import ast
import subprocess
import sys
import time
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src"
PKG = SRC / "rhosr"

#: What each subpackage may import at module level (besides itself, rhosr.errors and
#: rhosr._version).
ALLOWED = {
    "core": set(),
    "labels": {"core"},
    "dft": {"core", "labels"},
    "nn": {"core", "labels"},
    "inference": {"core", "labels", "nn"},
    "training": {"core", "labels", "nn"},
    "viz": {"core"},
    "cli": {"core", "labels", "dft", "nn", "inference", "training", "viz"},
}
#: Third-party packages a subpackage must never load.
FORBIDDEN = {"core": ("torch", "pyscf"), "labels": ("torch", "pyscf"), "nn": ("pyscf",),
             "training": ("pyscf",), "inference": ("pyscf",), "dft": ("torch",)}


def modules():
    """{dotted name: path} of every module of the package."""
    out = {}
    for path in sorted(PKG.rglob("*.py")):
        parts = path.relative_to(SRC).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        out[name] = path
    return out


def top_level_imports(path):
    """Dotted names of the rhosr modules a file imports at module level."""
    found = []
    for node in ast.parse(path.read_text()).body:
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("rhosr"):
            found.append(node.module)
            found.extend(f"{node.module}.{a.name}" for a in node.names)
        elif isinstance(node, ast.Import):
            found.extend(a.name for a in node.names if a.name.startswith("rhosr"))
    known = modules()
    return sorted({n for n in found if n in known})


def subpackage(name):
    parts = name.split(".")
    return parts[1] if len(parts) > 1 else None


def test_dependency_rule():
    bad = []
    for name, path in modules().items():
        sub = subpackage(name)
        if sub not in ALLOWED:
            continue
        for dep in top_level_imports(path):
            target = subpackage(dep)
            if target in (None, "errors", "_version", sub) or target in ALLOWED[sub]:
                continue
            bad.append(f"{name} imports {dep}")
    assert not bad, bad


def test_no_import_circle():
    graph = {name: [d for d in top_level_imports(path) if d != name]
             for name, path in modules().items()}
    state = {}

    def visit(node, trail):
        if state.get(node) == "done":
            return
        assert state.get(node) != "open", " -> ".join(trail + [node])
        state[node] = "open"
        for dep in graph.get(node, []):
            visit(dep, trail + [node])
        state[node] = "done"

    for node in graph:
        visit(node, [])


def test_no_private_name_across_modules():
    bad = []
    for name, path in modules().items():
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("rhosr"):
                bad += [f"{name}: {node.module}.{a.name}" for a in node.names
                        if a.name.startswith("_") and a.name != "__version__"]
    assert not bad, bad


def test_module_and_function_sizes():
    big, long_functions = [], []
    for name, path in modules().items():
        text = path.read_text()
        if text.count("\n") > 400:
            big.append(f"{name}: {text.count(chr(10))} lines")
        for node in ast.walk(ast.parse(text)):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                n = node.end_lineno - node.lineno + 1
                if n > 80:
                    long_functions.append(f"{name}.{node.name}: {n} lines")
    assert not big, big
    assert not long_functions, long_functions


def _loaded_after_import(targets):
    code = ("import importlib, sys\n"
            f"for m in {targets!r}: importlib.import_module(m)\n"
            "print(' '.join(sorted({m.split('.')[0] for m in sys.modules} & {'torch', 'pyscf'})))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return set(out.stdout.split())


@pytest.mark.parametrize("sub", sorted(FORBIDDEN))
def test_boundaries(sub):
    targets = [n for n in modules() if subpackage(n) == sub]
    assert targets
    loaded = _loaded_after_import(targets)
    assert not loaded & set(FORBIDDEN[sub]), f"rhosr.{sub} loads {sorted(loaded)}"


def test_public_api_loads_neither_torch_nor_pyscf():
    assert _loaded_after_import(["rhosr", "rhosr.cli.main"]) == set()


def test_help_is_fast():
    best = min(_timed([sys.executable, "-m", "rhosr", "--help"]) for _ in range(3))
    assert best <= 0.5, f"rhosr --help took {best:.2f} s"


def _timed(cmd) -> float:
    t0 = time.perf_counter()
    subprocess.run(cmd, capture_output=True, check=True)
    return time.perf_counter() - t0
