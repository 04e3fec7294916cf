"""What the harvest kernel is given: the few modules of the package it runs, as source.

The harvest runs in a kernel where the course package is absent (``zygote``: neither imported, nor
on the path, nor, isolated, on the file system). Its first cell loads, under their own names, the
kernel halves of the exercises (``exercises/kernel/``: whole modules, which import nothing else of
the package) and the objects the notebook hands over (``AssignmentRecord.handed_over``: each with
only the definitions it needs from its module, so that ``attention`` comes without 01's
``gpt2_attention``). Its set-up cell is the notebook's, less what the kernel does not have: the
checks, and every package name that is not handed over.
"""

import ast
import builtins
import functools
import importlib.util
import json
from pathlib import Path

from attention_course.answer_rules import ALLOWED_IMPORTS, ALWAYS_HANDED_OVER, as_python
from attention_course.assignments import BY_ID
from attention_course.exercises import exercises_of

PACKAGE = "attention_course"
KERNEL_HALF = "attention_course.exercises.kernel"
HARVEST_MODULE = f"{KERNEL_HALF}.harvest"
# Where set-up cells import ``default_device`` from (``ALWAYS_HANDED_OVER``). The harvest runs on the
# CPU on every grader, so that no score depends on the grader's hardware.
DEVICE_MODULES = tuple(dict.fromkeys(path.rpartition(".")[0] for path in ALWAYS_HANDED_OVER))
CPU_DEVICE = "import torch\n\n\ndef default_device():\n    return torch.device('cpu')\n"


@functools.cache
def _source_of(name: str) -> str:
    return Path(importlib.util.find_spec(name).origin).read_text()


@functools.cache
def _module_tree(name: str) -> ast.Module:
    return ast.parse(_source_of(name))


def _package_imports(tree: ast.AST) -> dict[str, set[str]]:
    """module -> names, of every ``from attention_course... import`` and ``import attention_course...`` in a tree."""
    found: dict[str, set[str]] = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == PACKAGE:
            found.setdefault(node.module, set()).update(alias.name for alias in node.names)
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.split(".")[0] == PACKAGE:
                    found.setdefault(alias.name, set())
    return found


def _bound(node: ast.stmt) -> set[str]:
    if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
        return {node.name}
    if isinstance(node, (ast.Import, ast.ImportFrom)):
        return {alias.asname or alias.name.split(".")[0] for alias in node.names}
    targets = node.targets if isinstance(node, ast.Assign) else [node.target] if isinstance(node, (ast.AnnAssign, ast.AugAssign)) else []
    return {n.id for target in targets for n in ast.walk(target) if isinstance(n, ast.Name)}


def _names_used(node: ast.AST) -> set[str]:
    return {n.id for n in ast.walk(node) if isinstance(n, ast.Name)}


def _closure(module: str, wanted: set[str]) -> tuple[str, dict[str, set[str]]]:
    """The source of ``module`` cut down to the definitions ``wanted`` needs (and the imports they
    use), and the package objects those imports name, which must be handed over as well."""
    body = [node for node in _module_tree(module).body
            if not (isinstance(node, ast.Expr) and isinstance(node.value, ast.Constant))]  # the docstring
    by_name = {name: node for node in body for name in _bound(node)}
    missing = wanted - set(by_name)
    if missing:
        raise LookupError(f"{module} has no {', '.join(sorted(missing))}")
    keep, todo = set(), list(wanted)
    while todo:
        node = by_name.get(todo.pop())
        if node is None or id(node) in keep:
            continue
        keep.add(id(node))
        if not isinstance(node, (ast.Import, ast.ImportFrom)):
            todo += list(_names_used(node))
    kept = [node for node in body if id(node) in keep]
    # Only the imports run at load time: one inside a function (a default loaded lazily) is never taken here.
    imports = [node for node in kept if isinstance(node, (ast.Import, ast.ImportFrom))]
    return "\n\n".join(ast.unparse(node) for node in kept) + "\n", _package_imports(ast.Module(body=imports, type_ignores=[]))


def _dotted(path: str) -> tuple[str, str]:
    module, _, name = path.rpartition(".")
    return module, name


def kernel_modules(assignment: str) -> list[tuple[str, str]]:
    """(module name, source) of every package module the harvest kernel of ``assignment`` runs, in
    an order in which each is loaded after what it imports; the packages above them as empty ones."""
    record = BY_ID[assignment]
    handed = {}
    for path in record.handed_over:
        module, name = _dotted(path)
        handed.setdefault(module, set()).add(name)
    wanted = {HARVEST_MODULE} | {exercise.cases.__module__ for exercise in exercises_of(assignment)}
    sources: dict[str, str] = {}
    order: list[str] = []

    def need(module: str, names: set[str]) -> None:
        """Ship ``module`` (and what it imports), which something shipped imports ``names`` from."""
        if module.startswith(KERNEL_HALF + "."):
            load = lambda: (_source_of(module), _package_imports(_module_tree(module)))  # noqa: E731
        elif module in handed and names <= handed[module]:
            load = lambda: _closure(module, handed[module])  # noqa: E731
        elif module in DEVICE_MODULES and names <= {"default_device"}:
            load = lambda: (CPU_DEVICE, {})  # noqa: E731
        else:
            raise ImportError(f"the harvest kernel of {assignment} cannot have {module} ({', '.join(sorted(names))}): "
                              "neither the kernel half of an exercise nor handed over")
        if module in sources:
            return
        sources[module], imports = load()
        for dependency, dependency_names in imports.items():
            if dependency != module:
                need(dependency, dependency_names)
        order.append(module)

    for module in sorted(wanted):
        need(module, set())
    for module in DEVICE_MODULES:
        need(module, {"default_device"})
    for module, names in handed.items():
        need(module, names)
    packages = sorted({".".join(name.split(".")[:depth]) for name in order for depth in range(1, name.count(".") + 1)})
    return [(package, "") for package in packages if package not in sources] + [(name, sources[name]) for name in order]


LOADER = '''# The grading harness. This kernel has no course package: its modules come here as source.
def _attention_course_load(modules):
    import sys
    import types

    packages = {name.rpartition(".")[0] for name, _ in modules}
    for name, _ in modules:
        sys.modules[name] = types.ModuleType(name)
        if name in packages:
            sys.modules[name].__path__ = []
    for name, _ in modules:
        parent, _, child = name.rpartition(".")
        if parent:
            setattr(sys.modules[parent], child, sys.modules[name])
    for name, source in modules:
        exec(compile(source, f"<course harness {name}>", "exec"), sys.modules[name].__dict__)


_attention_course_load(MODULES)
del _attention_course_load
'''


def loader_source(assignment: str) -> str:
    return LOADER.replace("MODULES", repr(kernel_modules(assignment)))


def setup_source(assignment: str, setup_cells: list[str]) -> str:
    """The notebook's set-up cells as the harvest kernel runs them: their imports of the allowed
    libraries and of what is handed over, and their assignments of values made of those (``device =
    default_device()``); not the checks, not a print, not an install."""
    handed = {*BY_ID[assignment].handed_over, *ALWAYS_HANDED_OVER}
    allowed = set(ALLOWED_IMPORTS)
    kept, bound = [], set(dir(builtins))
    for source in setup_cells:
        try:
            tree = ast.parse(as_python(source))
        except SyntaxError:
            continue
        for node in tree.body:
            if isinstance(node, ast.Import):
                node.names = [alias for alias in node.names if alias.name in allowed]
            elif isinstance(node, ast.ImportFrom):
                if node.module and node.module.split(".")[0] == PACKAGE:
                    node.names = [alias for alias in node.names if f"{node.module}.{alias.name}" in handed]
                elif node.module not in allowed:
                    node.names = []
            elif not isinstance(node, (ast.Assign, ast.AnnAssign)) or not _names_used(node.value) <= bound:
                continue
            if isinstance(node, (ast.Import, ast.ImportFrom)) and not node.names:
                continue
            kept.append(node)
            bound |= _bound(node)
    return ast.unparse(ast.Module(body=kept, type_ignores=[])) + "\n"


def harvest_source(plan: dict) -> str:
    return (f"from {HARVEST_MODULE} import harvest as _attention_course_harvest\n"
            f"_attention_course_harvest(globals(), {json.dumps(json.dumps(plan))})")
