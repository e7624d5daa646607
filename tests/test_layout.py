"""Data flows one way: ops -> activations -> recursion -> engine -> kernels -> everything else.

Every import of every module of gp_ntk (module level, inside functions and under
``TYPE_CHECKING`` alike) is read from its source; none may reach a layer above the
importing module's, ``gp_ntk.ops`` imports nothing else from gp_ntk, and ``gp_ntk.settings``
(which every layer may read) imports nothing from gp_ntk at all.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import gp_ntk

PACKAGE_ROOT = Path(gp_ntk.__file__).parent

#: the layers, lowest first; modules not named here (models, bo, dynamics, ...) are on top
LAYERS = ("ops", "activations", "recursion", "engine", "kernels")
TOP = len(LAYERS)


def module_name(path: Path, root: Path) -> str:
    parts = [root.name, *path.relative_to(root).with_suffix("").parts]
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imported_modules(path: Path, root: Path) -> list[tuple[int, str]]:
    """``(line, absolute module)`` of every import in ``path`` that names a module of the package."""
    name = module_name(path, root)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = []
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - (node.level - 1)]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            if node.module is None:
                # ``from .. import x`` names a submodule (or a name) of the package itself
                found += [(node.lineno, f"{target}.{alias.name}") for alias in node.names]
            else:
                found.append((node.lineno, target))
    prefix = root.name
    return [(line, target) for line, target in found if target == prefix or target.startswith(prefix + ".")]


def rank(module: str) -> int:
    parts = module.split(".")
    if len(parts) < 2 or parts[1] not in LAYERS:
        return TOP
    return LAYERS.index(parts[1])


def upward_imports(root: Path) -> list[str]:
    """Every import that breaks the one-way flow, as ``module:line -> target`` lines."""
    problems = []
    prefix = root.name
    for path in sorted(root.rglob("*.py")):
        name = module_name(path, root)
        for line, target in imported_modules(path, root):
            parts = target.split(".")
            if len(parts) > 1 and parts[1] == "settings" and name != f"{prefix}.settings":
                if rank(name) == 0:
                    problems.append(f"{name}:{line} -> {target} (ops imports nothing else from {prefix})")
                continue
            if name == f"{prefix}.settings":
                problems.append(f"{name}:{line} -> {target} (settings imports nothing from {prefix})")
            elif rank(name) == 0 and rank(target) != 0:
                problems.append(f"{name}:{line} -> {target} (ops imports nothing else from {prefix})")
            elif rank(target) > rank(name):
                problems.append(f"{name}:{line} -> {target} (a layer above)")
    return problems


def test_no_module_imports_a_layer_above_it():
    assert upward_imports(PACKAGE_ROOT) == []


def test_every_layer_exists():
    for layer in LAYERS:
        assert (PACKAGE_ROOT / layer).is_dir() or (PACKAGE_ROOT / f"{layer}.py").is_file(), layer


def _package(tmp_path: Path, files: dict[str, str]) -> Path:
    root = tmp_path / "gp_ntk"
    for relative, text in files.items():
        path = root / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return root


LOWER_LAYERS = {
    "__init__.py": "from . import kernels\n",
    "settings.py": "X = 1\n",
    "ops/__init__.py": "from .angular import j\n",
    "ops/angular.py": "def j():\n    return 0\n",
    "recursion.py": "from .ops import j\nfrom . import settings\n",
    "engine/__init__.py": "from ..recursion import j\n",
    "kernels/__init__.py": "from ..engine import j\nfrom .. import settings\n",
}


def test_the_check_accepts_a_downward_package(tmp_path):
    assert upward_imports(_package(tmp_path, LOWER_LAYERS)) == []


@pytest.mark.parametrize(
    "module,source,expected",
    [
        ("recursion.py", "def f():\n    from .engine import j\n", "gp_ntk.recursion:2 -> gp_ntk.engine"),
        ("engine/lazy.py", "from ..kernels import base\n", "gp_ntk.engine.lazy:1 -> gp_ntk.kernels"),
        ("ops/roots.py", "from .. import settings\n", "gp_ntk.ops.roots:1 -> gp_ntk.settings"),
        ("ops/roots.py", "from ..activations import a\n", "gp_ntk.ops.roots:1 -> gp_ntk.activations"),
        ("settings.py", "from .ops import j\n", "gp_ntk.settings:1 -> gp_ntk.ops"),
        ("kernels/base.py", "import gp_ntk.models\n", "gp_ntk.kernels.base:1 -> gp_ntk.models"),
    ],
)
def test_the_check_finds_an_upward_import(tmp_path, module, source, expected):
    problems = upward_imports(_package(tmp_path, {**LOWER_LAYERS, module: source}))
    assert any(problem.startswith(expected) for problem in problems), problems
