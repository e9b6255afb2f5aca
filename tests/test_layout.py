"""The package's shape: imports only go downward (no circles; the core never imports a tool package), no module
is over 600 lines, and `C2CForCausalLM`'s class body stays readable (under 350 lines)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "src" / "c2c_hf"
TOOL_PACKAGES = ("analysis", "commands", "demo", "evaluation", "integrations")
MAX_MODULE_LINES = 600
MAX_MODEL_CLASS_LINES = 350


def module_name(path: Path) -> str:
    parts = ["c2c_hf", *path.relative_to(PACKAGE).with_suffix("").parts]
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imported_modules(path: Path, modules: set[str]) -> set[str]:
    """The `c2c_hf` modules `path` imports (at any depth: lazy imports count), resolved to module names."""
    name = module_name(path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, *([base] if base else [])])
            targets = [f"{base}.{alias.name}" for alias in node.names] + [base]
        else:
            continue
        for target in targets:
            while target and target not in modules:  # `from .x import name` names module x (or x's attribute)
                target = target.rpartition(".")[0]
            if target and target != name:
                found.add(target)
    return found


def import_graph() -> dict[str, set[str]]:
    paths = {module_name(path): path for path in PACKAGE.rglob("*.py")}
    return {name: imported_modules(path, set(paths)) for name, path in paths.items()}


def test_no_import_circle():
    graph = import_graph()
    # `c2c_hf` (the package facade) re-exports from everything; modules that import the facade would close a circle
    importers_of_facade = sorted(name for name, targets in graph.items() if "c2c_hf" in targets and name != "c2c_hf")
    assert importers_of_facade == [], f"modules importing the c2c_hf facade: {importers_of_facade}"
    state: dict[str, str] = {}

    def visit(name: str, trail: list[str]) -> None:
        state[name] = "open"
        for target in sorted(graph[name] - {"c2c_hf"}):
            if state.get(target) == "open":
                raise AssertionError(f"import circle: {' -> '.join([*trail, name, target])}")
            if target not in state:
                visit(target, [*trail, name])
        state[name] = "done"

    for name in sorted(graph):
        if name not in state:
            visit(name, [])


def test_core_never_imports_a_tool_package():
    graph = import_graph()
    tools = tuple(f"c2c_hf.{package}" for package in TOOL_PACKAGES)
    for name, targets in graph.items():
        if name == "c2c_hf" or name.startswith(tools):
            continue
        upward = sorted(t for t in targets if t.startswith(tools))
        assert upward == [], f"core module {name} imports tool modules {upward}"


def test_the_import_check_sees_a_circle(tmp_path, monkeypatch):
    """The checker itself: two modules importing each other lazily are reported."""
    (tmp_path / "a.py").write_text("def f():\n    from .b import g\n", encoding="utf-8")
    (tmp_path / "b.py").write_text("from .a import f\n", encoding="utf-8")
    monkeypatch.setattr(__import__(__name__), "PACKAGE", tmp_path)
    with pytest.raises(AssertionError, match=r"import circle: c2c_hf\.a -> c2c_hf\.b -> c2c_hf\.a"):
        test_no_import_circle()


@pytest.mark.parametrize("path", sorted(PACKAGE.rglob("*.py")), ids=lambda p: str(p.relative_to(PACKAGE)))
def test_module_size(path: Path):
    lines = len(path.read_text(encoding="utf-8").splitlines())
    assert lines <= MAX_MODULE_LINES, f"{path.relative_to(PACKAGE)} has {lines} lines (at most {MAX_MODULE_LINES})"


def test_model_class_body_size():
    tree = ast.parse((PACKAGE / "modeling_c2c.py").read_text(encoding="utf-8"))
    (model,) = [node for node in tree.body if isinstance(node, ast.ClassDef) and node.name == "C2CForCausalLM"]
    lines = model.end_lineno - model.lineno + 1
    assert lines < MAX_MODEL_CLASS_LINES, f"C2CForCausalLM spans {lines} lines (under {MAX_MODEL_CLASS_LINES})"
