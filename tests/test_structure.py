"""The never-arrows of the package, read from the source (AST): who may import whom, and where.

- the runtime (what a Raspberry Pi runs) imports no TensorFlow/Keras, and nothing of train, convert or benchmarks;
- edgetune/contract.py imports no other edgetune module (the contract stands alone);
- edgetune/outputs.py and edgetune/versions.py import nothing heavy (lean top package);
- train imports nothing of convert; benchmarks imports train/convert only inside functions (the Keras rows);
- nobody outside runtime/ imports the runtime's private modules (`edgetune.runtime._*`).
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = {"edgetune": ROOT / "edgetune", "edgetune.train": ROOT / "train", "edgetune.convert": ROOT / "convert",
            "edgetune.runtime": ROOT / "runtime", "edgetune.benchmarks": ROOT / "benchmarks"}
HEAVY = ("tensorflow", "keras", "tf_keras", "tensorflow_model_optimization", "tf2onnx", "onnx", "matplotlib")


def _module_name(package: str, path: Path) -> str:
    return package if path.name == "__init__.py" else f"{package}.{path.stem}"


def imports(path: Path, package: str) -> list[tuple[str, bool]]:
    """(imported module, at module level?) for every import statement of a file, relative imports resolved."""
    tree = ast.parse(path.read_text())
    top = set(map(id, tree.body))
    # if TYPE_CHECKING / try blocks at module level still run at import time: count their bodies as top level.
    for node in tree.body:
        if isinstance(node, (ast.If, ast.Try)):
            for child in ast.walk(node):
                top.add(id(child))
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(a.name, id(node) in top) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            mod = node.module or ""
            if node.level:
                base = _module_name(package, path).split(".")
                mod = ".".join(base[: len(base) - node.level + (path.name == "__init__.py")] + ([mod] if mod else []))
            found += [(mod, id(node) in top)] + [(f"{mod}.{a.name}", id(node) in top) for a in node.names]
    return found


def all_imports():
    for package, folder in PACKAGES.items():
        for path in sorted(folder.glob("*.py")):
            yield package, path, imports(path, package)


def _hits(found, prefixes, top_only=False):
    return sorted({m for m, top in found if (top or not top_only) and any(m == p or m.startswith(p + ".") for p in prefixes)})


def test_scanner_sees_imports():
    found = dict((p.name, f) for pkg, p, f in all_imports() if pkg == "edgetune.benchmarks")
    assert any(m.startswith("edgetune.train") and not top for m, top in found["keras_baseline.py"])
    assert any(m == "numpy" and top for m, top in found["bench.py"])


@pytest.mark.parametrize("package,path,found", [x for x in all_imports() if x[0] == "edgetune.runtime"],
                         ids=lambda x: getattr(x, "name", str(x)))
def test_runtime_is_lean(package, path, found):
    assert not _hits(found, HEAVY + ("edgetune.train", "edgetune.convert", "edgetune.benchmarks")), path


def test_contract_stands_alone():
    found = imports(ROOT / "edgetune" / "contract.py", "edgetune")
    assert not [m for m, _ in found if m.startswith("edgetune")]


@pytest.mark.parametrize("name", ["outputs.py", "versions.py", "stats.py", "_config.py", "cli.py", "pipeline.py", "report.py"])
def test_top_package_is_lean_at_import(name):
    found = imports(ROOT / "edgetune" / name, "edgetune")
    assert not _hits(found, HEAVY + ("edgetune.train", "edgetune.convert", "edgetune.benchmarks"), top_only=True), name


def test_train_never_imports_convert():
    bad = {p.name: _hits(f, ("edgetune.convert",)) for pkg, p, f in all_imports() if pkg == "edgetune.train"}
    assert not {k: v for k, v in bad.items() if v}


def test_benchmarks_import_train_and_convert_only_lazily():
    bad = {p.name: _hits(f, ("edgetune.train", "edgetune.convert") + HEAVY, top_only=True)
           for pkg, p, f in all_imports() if pkg == "edgetune.benchmarks"}
    assert not {k: v for k, v in bad.items() if v}


def test_runtime_private_modules_stay_private():
    bad = {f"{pkg}/{p.name}": [m for m, _ in f if m.startswith("edgetune.runtime._")]
           for pkg, p, f in all_imports() if pkg != "edgetune.runtime"}
    assert not {k: v for k, v in bad.items() if v}


def test_no_function_over_80_lines():
    long = []
    for _pkg, path, _ in all_imports():
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.end_lineno - node.lineno + 1 > 80:
                long.append(f"{path.relative_to(ROOT)}:{node.lineno} {node.name} ({node.end_lineno - node.lineno + 1} lines)")
    assert not long
