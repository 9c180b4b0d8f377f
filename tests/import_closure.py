"""The code a `k2 stage NAME` command runs, found statically: the project's Python modules it imports (module-level
imports, and the imports inside the functions and classes it can reach), plus the non-Python files those modules
name by literal (the C++/CUDA sources k2core/kernels/build.py compiles, a worker script) and the headers those
sources `#include`.

Reachability is per top-level name: importing a module runs its module-level code; a function or class counts once
reached code refers to it (by name, as `module.name`, or in `from module import name`); a reached class counts with
all its methods. The two dynamic imports the analysis cannot see are given as roots by the caller
(`stage_roots`): `flows.cli._stage` importing `flows.NAME`, and `k2core.config.config_class` importing the config
class of each section the stage reads. argparse handlers other than the one dispatched are not followed.
"""

from __future__ import annotations

import ast
import re
from dataclasses import dataclass, field
from pathlib import Path

PACKAGES = ("flows", "tasks", "k2core")
_NATIVE_SUFFIXES = {".c", ".cc", ".cpp", ".cu", ".cuh", ".h", ".hpp"}
_INCLUDE = re.compile(r'^\s*#\s*include\s*"([^"]+)"', re.MULTILINE)


@dataclass
class Module:
    """One parsed project module: its top-level definitions and the modules its import statements bind."""

    name: str
    path: Path
    tree: ast.Module
    defs: dict[str, ast.AST] = field(default_factory=dict)
    module_aliases: dict[str, str] = field(default_factory=dict)
    name_bindings: dict[str, tuple[str, str]] = field(default_factory=dict)

    @property
    def package(self) -> str:
        return self.name if self.path.name == "__init__.py" else self.name.rpartition(".")[0]


def _module_name(root: Path, path: Path) -> str:
    parts = path.relative_to(root).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _is_main_block(node: ast.If) -> bool:
    """`if __name__ == "__main__":`, which runs only when the module is the script being run."""
    test = node.test
    return (isinstance(test, ast.Compare) and isinstance(test.left, ast.Name) and test.left.id == "__name__"
            and any(isinstance(c, ast.Constant) and c.value == "__main__" for c in test.comparators))


def _is_type_checking(node: ast.AST) -> bool:
    test = getattr(node, "test", None)
    return isinstance(node, ast.If) and (
        (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING")
        or (isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"))


class Project:
    """The project's modules by dotted name, and the walk that computes a closure over them."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.files = {p for package in PACKAGES for p in (root / package).rglob("*")
                      if p.is_file() and "__pycache__" not in p.parts}
        self.paths = {_module_name(root, p): p for p in self.files if p.suffix == ".py"}
        self.by_name: dict[str, list[Path]] = {}
        for path in self.files:
            self.by_name.setdefault(path.name, []).append(path)
        self._parsed: dict[str, Module] = {}

    def module(self, name: str) -> Module:
        if name not in self._parsed:
            path = self.paths[name]
            module = Module(name, path, ast.parse(path.read_text(), filename=str(path)))
            for node in module.tree.body:
                if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                    module.defs[node.name] = node
            self._parsed[name] = module
            for node in ast.walk(module.tree):
                if isinstance(node, (ast.Import, ast.ImportFrom)):
                    for alias in node.names:
                        target = self.imported_module(module, node, alias)
                        if target:
                            module.module_aliases[alias.asname or alias.name.split(".")[0]] = target
                        elif isinstance(node, ast.ImportFrom) and alias.name != "*":
                            module.name_bindings[alias.asname or alias.name] = (self.base_of(module, node),
                                                                                alias.name)
        return self._parsed[name]

    def base_of(self, module: Module, node: ast.ImportFrom) -> str:
        """The absolute module a `from ... import` names (relative imports resolved against the package)."""
        if not node.level:
            return node.module or ""
        package = module.package.split(".")
        base = ".".join(package[: len(package) - node.level + 1])
        return f"{base}.{node.module}" if node.module else base

    def imported_module(self, module: Module, node: ast.Import | ast.ImportFrom, alias: ast.alias) -> str | None:
        """The project module an import alias binds, if it binds a module."""
        if isinstance(node, ast.Import):
            name = alias.name if alias.asname else alias.name.split(".")[0]
            return name if name in self.paths else None
        candidate = f"{self.base_of(module, node)}.{alias.name}"
        return candidate if candidate in self.paths else None


class Closure:
    """Worklist over (module, top-level name | None); collects the files the reached code needs."""

    def __init__(self, project: Project) -> None:
        self.project = project
        self.done: set[tuple[str, str | None]] = set()
        self.todo: list[tuple[str, str | None]] = []
        self.needed: set[Path] = set()
        self.via: dict[tuple[str, str | None] | Path, tuple[str, str | None] | None] = {}
        self.current: tuple[str, str | None] | None = None
        self.scripts: set[str] = set()  # modules run as a script, whose `__main__` block runs too
        self.attributes: set[str] = set()  # attribute names reached code uses (for method-level dynamic imports)

    def why(self, path: Path) -> str:
        """The chain of reached code that makes `path` needed (for failure messages)."""
        chain, item = [], self.via.get(path)
        while item is not None and len(chain) < 40:
            chain.append(item[0] if item[1] is None else f"{item[0]}.{item[1]}")
            item = self.via.get(item)
        return " <- ".join(chain)

    def reach_module(self, name: str) -> None:
        parts = name.split(".")
        for end in range(1, len(parts) + 1):
            prefix = ".".join(parts[:end])
            if prefix in self.project.paths:
                self._push((prefix, None))

    def reach_name(self, module: str, name: str) -> None:
        """`module.name` is used: a submodule, a definition, or a name that module imports from elsewhere."""
        if f"{module}.{name}" in self.project.paths:
            self.reach_module(f"{module}.{name}")
            return
        if module not in self.project.paths:
            return
        self.reach_module(module)
        parsed = self.project.module(module)
        if name in parsed.defs:
            self._push((module, name))
        elif name in parsed.name_bindings:  # re-exported: follow the import that binds it
            self.reach_name(*parsed.name_bindings[name])

    def _push(self, item: tuple[str, str | None]) -> None:
        if item not in self.done:
            self.done.add(item)
            self.via[item] = self.current
            self.todo.append(item)

    def need_file(self, path: Path) -> None:
        if path in self.needed or not path.is_file():
            return
        self.needed.add(path)
        self.via[path] = self.current
        if path.suffix in _NATIVE_SUFFIXES:
            for include in _INCLUDE.findall(path.read_text(errors="replace")):
                self.need_file((path.parent / include).resolve())

    def run(self) -> set[Path]:
        while self.todo:
            module_name, name = self.current = self.todo.pop()
            module = self.project.module(module_name)
            if name is None:
                self.need_file(module.path)
                _Walker(self, module, shallow=True).visit(module.tree)
            else:
                _Walker(self, module, shallow=False).visit(module.defs[name])
        return self.needed

    def reached(self, module: str, name: str | None = None) -> bool:
        return (module, name) in self.done


class _Walker(ast.NodeVisitor):
    """Visits reached code; `shallow` (module-level code) skips function bodies and methods, which run only when
    something refers to them."""

    def __init__(self, closure: Closure, module: Module, shallow: bool) -> None:
        self.closure, self.module, self.shallow = closure, module, shallow

    def _def_header(self, node: ast.FunctionDef | ast.AsyncFunctionDef) -> None:
        for expr in [*node.decorator_list, *node.args.defaults, *(d for d in node.args.kw_defaults if d)]:
            self.visit(expr)

    def visit_FunctionDef(self, node: ast.FunctionDef | ast.AsyncFunctionDef) -> None:
        self._def_header(node)
        if not self.shallow:
            for stmt in node.body:
                self.visit(stmt)

    visit_AsyncFunctionDef = visit_FunctionDef

    def visit_ClassDef(self, node: ast.ClassDef) -> None:
        for expr in [*node.decorator_list, *node.bases, *(k.value for k in node.keywords)]:
            self.visit(expr)
        for stmt in node.body:
            self.visit(stmt)

    def visit_arg(self, node: ast.arg) -> None:  # annotations never run (from __future__ import annotations)
        return

    def visit_AnnAssign(self, node: ast.AnnAssign) -> None:
        if node.value is not None:
            self.visit(node.value)

    def visit_If(self, node: ast.If) -> None:
        if _is_main_block(node) and self.module.name not in self.closure.scripts:
            return
        if not _is_type_checking(node):
            self.visit(node.test)
            for stmt in node.body:
                self.visit(stmt)
        for stmt in node.orelse:
            self.visit(stmt)

    def visit_Import(self, node: ast.Import) -> None:
        for alias in node.names:
            self.closure.reach_module(alias.name)

    def visit_ImportFrom(self, node: ast.ImportFrom) -> None:
        base = self.closure.project.base_of(self.module, node)
        self.closure.reach_module(base)
        for alias in node.names:
            if alias.name == "*":
                for name in self.closure.project.module(base).defs if base in self.closure.project.paths else ():
                    self.closure.reach_name(base, name)
            elif f"{base}.{alias.name}" in self.closure.project.paths:
                self.closure.reach_module(f"{base}.{alias.name}")
            # an imported function or class counts once reached code uses its name (visit_Name)

    def visit_Name(self, node: ast.Name) -> None:
        if node.id in self.module.defs:
            self.closure.reach_name(self.module.name, node.id)
        elif node.id in self.module.name_bindings:
            self.closure.reach_name(*self.module.name_bindings[node.id])

    def visit_Attribute(self, node: ast.Attribute) -> None:
        self.closure.attributes.add(node.attr)
        chain: list[str] = []
        value: ast.AST = node
        while isinstance(value, ast.Attribute):
            chain.append(value.attr)
            value = value.value
        if isinstance(value, ast.Name) and value.id in self.module.module_aliases:
            current = self.module.module_aliases[value.id]
            for attr in reversed(chain):
                if f"{current}.{attr}" not in self.closure.project.paths:
                    self.closure.reach_name(current, attr)
                    break
                current = f"{current}.{attr}"
        self.generic_visit(node)

    def visit_Call(self, node: ast.Call) -> None:
        func = node.func
        if (isinstance(func, ast.Attribute) and func.attr == "import_module" and node.args
                and isinstance(node.args[0], ast.Constant) and isinstance(node.args[0].value, str)):
            self.closure.reach_module(node.args[0].value)
        dispatch = isinstance(func, ast.Attribute) and func.attr == "set_defaults"
        self.visit(func)
        for arg in node.args:
            self.visit(arg)
        for keyword in node.keywords:
            if not (dispatch and keyword.arg == "handler"):  # argparse handlers run only when dispatched
                self.visit(keyword.value)

    def visit_Constant(self, node: ast.Constant) -> None:
        """A literal naming a project module (`-m k2core.x`) or a file in this module's package folder."""
        if not isinstance(node.value, str) or not node.value or len(node.value) > 200:
            return
        text = node.value
        if text in self.closure.project.paths:  # `python -m module`
            self.closure.scripts.add(text)
            self.closure.reach_module(text)
        folder = self.module.path.parent
        named = self.closure.project.by_name.get(text.rpartition("/")[2], [])
        for path in named:
            if path.is_relative_to(folder) and ("/" not in text or path == folder / text):
                self.closure.need_file(path)
                if path.suffix == ".py":  # a script this code runs (`python path/to/x.py`)
                    self.closure.scripts.add(_module_name(self.closure.project.root, path))
                    self.closure.reach_module(_module_name(self.closure.project.root, path))


def stage_closure(project: Project, stage: str) -> Closure:
    """What `k2 stage STAGE` runs: the `k2` console script (flows.cli:main), the argparse handler that dispatches
    `stage`, the stage's flow module, and the config classes of the sections it reads."""
    from flows import cli, layout
    from k2core.config import SECTIONS

    handler = cli.build_parser().parse_args(["stage", stage]).handler
    closure = Closure(project)
    closure.reach_name("flows.cli", "main")
    closure.reach_name("flows.cli", handler.__name__)
    closure.reach_name(f"flows.{stage}", f"{stage}_flow")  # importlib.import_module(f"flows.{name}") in _stage
    closure.run()
    if closure.reached("k2core.config", "Params"):  # Params.section -> config_class: importlib on SECTIONS
        validates_all = "validate_all" in closure.attributes  # Params.validate_all() loads every section
        for section in SECTIONS if validates_all else layout.STAGE_SECTIONS[stage]:
            module, name = SECTIONS[section].split(":")
            closure.reach_name(module, name)
        closure.run()
    if closure.reached("k2core.eval.registry", "build_tasks"):  # LazyTask: importlib on each task's module
        from k2core.eval.registry import TASKS

        for lazy in TASKS.values():
            closure.reach_name(lazy.module, lazy.factory)
        closure.run()
    return closure


def covering_deps(project: Project, needed: set[Path]) -> list[str]:
    """The narrowest dvc.yaml deps for `needed` project files: a folder where all its files are needed, else files."""
    def walk(folder: Path) -> list[Path]:
        files = {f for f in project.files if f.is_relative_to(folder)}
        if folder.parent != project.root and files <= needed:
            return [folder]
        out: list[Path] = []
        for child in sorted(folder.iterdir()):
            if child.is_dir() and any(f.is_relative_to(child) for f in needed):
                out += walk(child)
            elif child in needed:
                out.append(child)
        return out

    return [p.relative_to(project.root).as_posix() for package in PACKAGES for p in walk(project.root / package)]
