"""The package's layout: one import direction (deepred.core.imports.LAYERS), no cycle, torch-free parse time."""

from __future__ import annotations

import subprocess
import sys

from deepred.core.imports import LAYERS, closure, imports_of, package_modules, stage


def _upward_imports(imports=imports_of) -> list[str]:
    wrong = []
    for name in package_modules():
        own = stage(name)
        for target in imports(name):
            theirs = stage(target)
            if theirs is None and target != "deepred":
                wrong.append(f"{name} imports the package face {target}")
            elif own is not None and theirs is not None and LAYERS.index(theirs) > LAYERS.index(own):
                wrong.append(f"{name} ({own}) imports {target} ({theirs}), a later stage")
    return wrong


def _cycles(imports=imports_of) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    index, low, stack, on_stack, found = {}, {}, [], set(), []

    def visit(v):
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in imports(v):
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

    for name in package_modules():
        if name not in index:
            visit(name)
    return found


def test_every_module_belongs_to_a_stage():
    top = sorted(n for n in package_modules() if stage(n) is None)
    assert top == ["deepred", "deepred.archive", "deepred.cli", "deepred.download", "deepred.rail", "deepred.slurm"]
    assert sorted({stage(n) for n in package_modules()} - {None}) == sorted(LAYERS)


def test_imports_go_down_the_layers():
    assert _upward_imports() == []


def test_no_import_cycle():
    assert _cycles() == []


def test_the_package_face_imports_nothing():
    assert imports_of("deepred") == frozenset()


def test_a_reintroduced_cycle_is_caught():
    """The checks can fail: an import of the trainer from core is an upward import and closes a cycle."""

    def with_bad_edge(name):
        found = imports_of(name)
        return found | {"deepred.training.train"} if name == "deepred.core.io" else found

    assert "deepred.core.io (core) imports deepred.training.train (training), a later stage" in _upward_imports(
        with_bad_edge)
    assert any({"deepred.core.io", "deepred.training.train"} <= set(c) for c in _cycles(with_bad_edge))


def test_parse_time_modules_are_torch_free():
    """What rules/common.smk imports at parse time pulls neither torch nor timm nor pandas' heavy readers."""
    for module in ("deepred.workflow", "deepred.core.model_names", "deepred.contracts.config"):
        assert not any(m.startswith(("deepred.models", "deepred.training")) for m in closure(module)), module
    code = ("import sys; import deepred.workflow, deepred.core.model_names, deepred.contracts.config; "
            "print(sorted(m for m in ('torch', 'timm') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_function_local_package_imports_say_why():
    """An import of the package inside a function stays only as a measured start-up saving, with a comment."""
    import ast

    silent = []
    for name, path in package_modules().items():
        lines = path.read_text().splitlines()
        for fn in ast.walk(ast.parse("\n".join(lines))):
            if not isinstance(fn, (ast.FunctionDef, ast.AsyncFunctionDef)):
                continue
            for node in ast.walk(fn):
                if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("deepred"):
                    if not any("#" in line for line in lines[max(0, node.lineno - 4):node.end_lineno]):
                        silent.append(f"{name}:{node.lineno}")
    assert silent == []
