"""The package as a user imports it: submodules reachable as attributes, loaded lazily; license files."""

from __future__ import annotations

import ast
import importlib.util
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def test_submodules_are_attributes_loaded_on_first_use() -> None:
    code = textwrap.dedent(
        """
        import sys
        import sparsecore
        lazy = ["datasets", "encoders", "eval", "fusion", "gpu", "lsse", "pursuit", "sdr", "testing"]
        assert not any(f"sparsecore.{m}" in sys.modules for m in lazy), sorted(sys.modules)
        assert "torch" not in sys.modules and "scipy" not in sys.modules
        assert callable(sparsecore.pursuit.omp)
        assert "sparsecore.pursuit" in sys.modules and "sparsecore.sdr" not in sys.modules
        for m in lazy:
            assert getattr(sparsecore, m).__name__ == f"sparsecore.{m}"
            assert m in dir(sparsecore)
        try:
            sparsecore.no_such_module
        except AttributeError as e:
            assert "no_such_module" in str(e)
        else:
            raise SystemExit("missing attribute did not raise")
        print("ok")
        """
    )
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=False)
    assert res.returncode == 0, res.stderr
    assert res.stdout.strip() == "ok"


def test_license_files_match_the_declared_license() -> None:
    pyproject = (ROOT / "pyproject.toml").read_text()
    assert 'license = { text = "MIT OR Apache-2.0" }' in pyproject
    assert "Permission is hereby granted, free of charge" in (ROOT / "LICENSE-MIT").read_text()
    assert "Apache License" in (ROOT / "LICENSE-APACHE").read_text()


PACKAGE = ROOT / "python" / "sparsecore"


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _top_level_imports(path: Path, name: str) -> set[str]:
    """Modules that ``path`` imports when it is imported: module level only (not in functions or TYPE_CHECKING)."""
    is_package = path.name == "__init__.py"
    found: set[str] = set()

    def visit(nodes: list[ast.stmt]) -> None:
        for node in nodes:
            if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
                visit(node.orelse)
                continue
            if isinstance(node, (ast.If, ast.Try)):
                visit(node.body)
                visit(node.orelse)
                if isinstance(node, ast.Try):
                    for handler in node.handlers:
                        visit(handler.body)
                    visit(node.finalbody)
            elif isinstance(node, ast.Import):
                found.update(a.name for a in node.names)
            elif isinstance(node, ast.ImportFrom):
                if node.level:
                    base = name.split(".")[: len(name.split(".")) - node.level + is_package]
                    module = ".".join([*base, node.module] if node.module else base)
                else:
                    module = node.module or ""
                found.add(module)
                found.update(f"{module}.{a.name}" for a in node.names)  # `from pkg import submodule`

    visit(ast.parse(path.read_text(encoding="utf-8")).body)
    return found


def _import_graph() -> dict[str, set[str]]:
    paths = {_module_name(p): p for p in PACKAGE.rglob("*.py")}
    graph: dict[str, set[str]] = {}
    for name, path in paths.items():
        deps = {m for m in _top_level_imports(path, name) if m in paths and m != name}
        # Importing a.b.c imports its packages a and a.b first; the package itself is not a dependency cycle.
        graph[name] = {d for d in deps if not name.startswith(d + ".")}
    return graph


def _find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def dfs(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for dep in sorted(graph[node]):
            if state.get(dep) == 1:
                return [*path[path.index(dep) :], dep]
            if dep not in state and (cycle := dfs(dep)) is not None:
                return cycle
        path.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (cycle := dfs(node)) is not None:
            return cycle
    return None


def test_cycle_finder_sees_a_cycle() -> None:
    assert _find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert _find_cycle({"a": {"b"}, "b": set(), "c": {"a", "b"}}) is None


def test_import_graph_is_read_from_the_sources() -> None:
    graph = _import_graph()
    assert "sparsecore._validate" in graph["sparsecore.sparse"]
    assert "sparsecore._pursuit" in graph["sparsecore._estimators"]
    assert "sparsecore.store" in graph["sparsecore.cli"]
    assert "sparsecore.store" in graph["sparsecore.demo"]


def test_sparsecore_modules_import_each_other_without_cycles() -> None:
    graph = _import_graph()
    assert len(graph) >= 25
    assert _find_cycle(graph) is None, f"import cycle: {' -> '.join(_find_cycle(graph) or [])}"
    assert "sparsecore.cli" not in graph["sparsecore.demo"]
    assert "sparsecore.encoders.splade" not in graph["sparsecore.encoders.promptreps"]


# Packages and modules whose import needs an optional extra (skipped when it is missing); a key covers its
# submodules.
_NEEDS = {
    "sparsecore.torch": "torch",
    "sparsecore.sae": "torch",
    "sparsecore.llm": "torch",
    "sparsecore.testing.strategies": "hypothesis",
    "sparsecore.gpu._common": "torch",
    "sparsecore.gpu._decode": "torch",
    "sparsecore.gpu._encode": "torch",
    "sparsecore.gpu._gemv": "torch",
    "sparsecore.gpu._decode_kernels": "triton",
    "sparsecore.gpu._encode_kernels": "triton",
    "sparsecore.gpu._gemv_kernels": "triton",
    "sparsecore.gpu._attention": "torch",
    "sparsecore.gpu._attention_kernels": "triton",
}


@pytest.mark.parametrize("module", sorted(_import_graph()))
def test_every_module_imports_alone_in_a_fresh_interpreter(module: str) -> None:
    extra = next((e for p, e in _NEEDS.items() if module == p or module.startswith(p + ".")), None)
    if extra is not None and importlib.util.find_spec(extra) is None:
        pytest.skip(f"needs {extra}")
    code = f"import importlib, sys; m = importlib.import_module({module!r}); print(m.__name__)"
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=False)
    assert res.returncode == 0, res.stderr
    assert res.stdout.strip() == module


def test_no_private_name_is_imported_from_another_encoder_module() -> None:
    for path in (PACKAGE / "encoders").glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            module = node.module or "" if isinstance(node, ast.ImportFrom) else ""
            if isinstance(node, ast.ImportFrom) and module.startswith("sparsecore.encoders."):
                target = module.rsplit(".", 1)[-1]
                if target.startswith("_"):
                    continue  # a private shared module (e.g. _text, _decode) is meant to be imported
                private = [a.name for a in node.names if a.name.startswith("_")]
                assert not private, f"{path.name} imports private {private} from {module}"
