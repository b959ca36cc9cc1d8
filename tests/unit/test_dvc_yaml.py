"""dvc.yaml mirrors the command line: every path a stage's cmd names is one of its deps or outs."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
STAGES: dict[str, dict] = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]
PARAMS: dict = yaml.safe_load((ROOT / "params.yaml").read_text())


def _interpolate(text: str) -> str:
    """Resolve ${block.key} the way DVC does from params.yaml."""

    def value(match: re.Match[str]) -> str:
        node: object = PARAMS
        for part in match.group(1).split("."):
            node = node[part]  # type: ignore[index]
        return str(node)

    return re.sub(r"\$\{([^}]+)\}", value, text)


def _declared(stage: dict, *keys: str) -> set[str]:
    paths: set[str] = set()
    for key in keys:
        for entry in stage.get(key, []):
            paths.add(_interpolate(next(iter(entry)) if isinstance(entry, dict) else entry).rstrip("/"))
    return paths


def _cmd_paths(cmd: str) -> list[str]:
    tokens = _interpolate(cmd).split()
    paths = []
    for token in tokens:
        if token.startswith("-") or "://" in token:
            continue
        if "/" in token or re.search(r"\.(parquet|json|db|yaml|txt|csv|md)$", token):
            paths.append(token.rstrip("/"))
    return paths


@pytest.mark.parametrize("name", sorted(STAGES))
def test_every_path_in_a_cmd_is_a_dep_or_an_out(name: str) -> None:
    stage = STAGES[name]
    declared = _declared(stage, "deps", "outs", "metrics", "plots")
    if stage.get("params"):
        declared.add("params.yaml")  # tracked key by key through the stage's `params:` list
    for path in _cmd_paths(stage["cmd"]):
        inside = any(path == d or path.startswith(d + "/") or d.startswith(path + "/") for d in declared)
        assert inside, f"stage {name}: {path} appears in cmd but not in deps/outs"


@pytest.mark.parametrize("name", sorted(STAGES))
def test_every_code_dependency_exists(name: str) -> None:
    for dep in _declared(STAGES[name], "deps"):
        if dep.startswith(("pipelines", "config")):
            assert (ROOT / dep).exists(), f"stage {name}: dependency {dep} does not exist"


@pytest.mark.parametrize("name", sorted(STAGES))
def test_every_stage_depends_on_the_typed_params_it_is_validated_by(name: str) -> None:
    deps = _declared(STAGES[name], "deps")
    if "--params" in STAGES[name]["cmd"]:
        assert "pipelines/config.py" in deps, f"stage {name} reads params.yaml but does not depend on config.py"


def _module_file(module: str) -> Path | None:
    path = ROOT / Path(*module.split("."))
    if path.with_suffix(".py").exists():
        return path.with_suffix(".py")
    if (path / "__init__.py").exists():
        return path / "__init__.py"
    return None


def _pipelines_imports(tree: ast.AST) -> set[str]:
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("pipelines"):
            found.add(node.module)
            found.update(f"{node.module}.{alias.name}" for alias in node.names)
        elif isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name.startswith("pipelines"))
    return {m for m in found if _module_file(m) is not None}


def _command_modules(command: str) -> set[Path]:
    """Files of every pipelines module the CLI command imports, followed transitively."""
    cli = ast.parse((ROOT / "pipelines" / "cli.py").read_text())
    body = next(
        node
        for node in ast.walk(cli)
        if isinstance(node, ast.FunctionDef)
        and any(
            isinstance(d, ast.Call) and d.args and getattr(d.args[0], "value", None) == command
            for d in node.decorator_list
        )
    )
    todo = list(
        _pipelines_imports(body)
        | _pipelines_imports(
            ast.Module(body=[n for n in cli.body if isinstance(n, ast.ImportFrom | ast.Import)], type_ignores=[])
        )
    )
    files: set[Path] = {ROOT / "pipelines" / "cli.py"}
    while todo:
        path = _module_file(todo.pop())
        if path is None or path in files:
            continue
        files.add(path)
        todo.extend(_pipelines_imports(ast.parse(path.read_text())))
    return {f for f in files if f.name != "__init__.py" or _has_code(f)}


def _has_code(path: Path) -> bool:
    """Whether a module holds more than a docstring."""
    body = ast.parse(path.read_text()).body
    return any(not (isinstance(n, ast.Expr) and isinstance(n.value, ast.Constant)) for n in body)


@pytest.mark.parametrize("name", sorted(STAGES))
def test_every_stage_depends_on_the_modules_its_command_imports(name: str) -> None:
    command = _interpolate(STAGES[name]["cmd"]).split()[1]
    deps = _declared(STAGES[name], "deps")
    missing = []
    for path in sorted(_command_modules(command)):
        relative = path.relative_to(ROOT).as_posix()
        if relative in ("pipelines/cli.py", "pipelines/errors.py"):
            continue  # the CLI shell and error types do not change what a stage computes
        if not any(relative == d or relative.startswith(d + "/") for d in deps):
            missing.append(relative)
    assert not missing, f"stage {name} imports {missing} but does not list them in deps"
