"""Code in a submission that reaches into the machinery of grading, found by reading it (in the
grader's process, without running it).

The verdicts do not depend on what the student's process says about itself, but its harvest runs
there: code that rewrites later cells, removes the watch for forbidden calls, swaps modules in
``sys.modules`` or replaces library functions could make the harvest report outputs that the
student's functions did not compute. Such a notebook scores 0 on every item, with a message that
names what was found. Ordinary code never needs any of it."""

import ast

from attention_course.grading.cells import as_python, is_harvest_cell, is_solution_cell, nbgrader_meta

# Attributes whose only use in a notebook is to change how later cells, errors or calls are handled.
ATTRIBUTES = {
    "input_transformers_post": "rewrites later cells",
    "input_transformers_cleanup": "rewrites later cells",
    "ast_transformers": "rewrites later cells",
    "events": "hooks into cell execution",
    "set_custom_exc": "replaces error handling",
    "showtraceback": "replaces error reporting",
    "excepthook": "replaces error reporting",
    "setprofile": "replaces the profiler",
    "settrace": "replaces the tracer",
    "_getframe": "inspects the caller's frames",
    "get_referrers": "reaches other objects through the garbage collector",
    "get_objects": "reaches other objects through the garbage collector",
    "_pop_mode": "removes torch's function modes",
    "_disable_current_modes": "removes torch's function modes",
    "__builtins__": "replaces built-in functions",
    "__code__": "rewrites functions",
}
NAMES = {
    "__import__": "imports modules by computed names",
    "importlib": "imports modules by computed names",
    "ctypes": "reaches the interpreter's memory",
    "builtins": "replaces built-in functions",
    "__builtins__": "replaces built-in functions",
    "TorchFunctionMode": "intercepts torch's functions",
    "TorchDispatchMode": "intercepts torch's operations",
}
MODULES = ("attention_course.grading", "importlib", "ctypes", "builtins", "torch.overrides", "torch.utils._python_dispatch")
# Library settings a notebook may change (torch.backends.cudnn.benchmark = True, say).
SETTINGS = ("torch.backends",)


def student_cells(nb) -> list[tuple[str, str]]:
    """(label, source) of the code the student wrote: answer cells and cells they added."""
    cells = []
    for index, cell in enumerate(nb.cells, start=1):
        if cell.cell_type != "code" or is_harvest_cell(cell):
            continue
        meta = nbgrader_meta(cell)
        if is_solution_cell(cell) or not (meta.get("locked") or meta.get("grade")):
            cells.append((meta.get("grade_id") or f"cell {index}", cell.source))
    return cells


def _dotted(node) -> str:
    parts = []
    while isinstance(node, ast.Attribute):
        parts.append(node.attr)
        node = node.value
    if isinstance(node, ast.Name):
        parts.append(node.id)
        return ".".join(reversed(parts))
    return ""


def _imported_names(trees) -> dict[str, str]:
    """Name -> module, for every name an import statement binds in the notebook."""
    names = {}
    for tree in trees:
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                for alias in node.names:
                    names[alias.asname or alias.name.split(".")[0]] = alias.name if alias.asname else alias.name.split(".")[0]
            elif isinstance(node, ast.ImportFrom) and node.module:
                for alias in node.names:
                    names[alias.asname or alias.name] = f"{node.module}.{alias.name}"
    return names


def _findings(tree, imported: dict[str, str]) -> str:
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and node.attr in ATTRIBUTES:
            return f"{_dotted(node) or node.attr} ({ATTRIBUTES[node.attr]})"
        if isinstance(node, ast.Attribute) and node.attr == "modules" and _dotted(node.value) == "sys":
            return "sys.modules (swaps modules)"
        if isinstance(node, ast.Name) and node.id in NAMES:
            return f"{node.id} ({NAMES[node.id]})"
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            modules = [alias.name for alias in node.names] if isinstance(node, ast.Import) else [node.module or ""]
            for module in modules:
                if module.startswith(MODULES):
                    return f"import {module}"
        targets = []
        if isinstance(node, (ast.Assign, ast.Delete)):
            targets = node.targets
        elif isinstance(node, (ast.AugAssign, ast.AnnAssign)):
            targets = [node.target]
        elif isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id in ("setattr", "delattr") and node.args:
            targets = [ast.Attribute(value=node.args[0], attr="?")]
        for target in targets:
            dotted = _dotted(target) if isinstance(target, ast.Attribute) else ""
            root = dotted.split(".")[0]
            if root in imported:
                full = imported[root] + dotted[len(root):]
                if not full.startswith(SETTINGS):
                    return f"{dotted} = ... (replaces part of {imported[root]})"
    return ""


def tampering(nb, setup_sources: list[str]) -> str:
    """'' for a notebook whose code leaves grading alone; else what was found and where."""
    parsed = []
    for label, source in student_cells(nb):
        try:
            parsed.append((label, ast.parse(as_python(source))))
        except SyntaxError:
            continue  # it fails in the student's process, costing its own items
    setup = []
    for source in setup_sources:
        try:
            setup.append(ast.parse(as_python(source)))
        except SyntaxError:
            continue
    imported = _imported_names(setup + [tree for _, tree in parsed])
    for label, tree in parsed:
        found = _findings(tree, imported)
        if found:
            return f"the notebook changes how it is graded: {found}, in {label}; every item scores 0"
    return ""
