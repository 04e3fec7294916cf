"""The language of answers: the plain subset of Python that answer cells are written in.

Before any student code runs, the grader reads every cell the student wrote or added; the visible
checks read the functions they are given in the same way, so a student meets each rule in Colab
before handing in. A cell is accepted when it keeps to these rules (stated in each assignment's
rule box):

- imports only from ``ALLOWED_IMPORTS``;
- no dynamic code (``DYNAMIC``), no ``getattr``/``setattr``/``delattr``/``hasattr`` with a computed
  name, no name or attribute that starts with ``_`` (defining ``__init__`` and other special methods
  is fine, and so is ``super().__init__``), no escape hatch of torch or numpy (``ESCAPE_HATCHES``);
- nothing imported is assigned to or rebound;
- of a cell's top level, grading runs only imports, definitions and assignments (a print or a magic
  runs in the student's notebook, not when grading);
- no mention of the kernels an exercise asks for (``FUSED``, ``generate``) and, of the names the
  notebook's given cells bind, only the ones they hand over (earlier assignments' functions).

With the dynamic routes gone, whatever a function can reach is written in it, so reading it finds
every call of a forbidden kernel: nothing is missed by aliasing, ``exec`` strings or computed names.
"""

import ast
import inspect
from dataclasses import dataclass, field

from attention_course.assignments import RECORDS

ALLOWED_IMPORTS = ("torch", "torch.nn", "torch.nn.functional", "math", "numpy", "einops", "functools", "itertools",
                   "typing", "dataclasses", "collections", "collections.abc", "time")

DYNAMIC = {
    "exec": "runs code from a string", "eval": "runs code from a string", "compile": "builds code from a string",
    "globals": "reaches the notebook's namespace", "locals": "reaches a namespace", "vars": "reaches a namespace",
    "open": "reads or writes files", "input": "waits for input", "breakpoint": "starts a debugger",
    "help": "starts the help system", "exit": "ends the process", "quit": "ends the process",
    "memoryview": "reaches raw memory", "get_ipython": "reaches IPython's machinery", "display": "writes outputs",
    "In": "reads the notebook's history", "Out": "reads the notebook's history",
}
# Attributes of torch and numpy (or of anything) that leave plain tensor code: files, pickles,
# compilers, other processes, operator registries, function modes, type-hint evaluation.
ESCAPE_HATCHES = {
    "load": "loads files (pickles)", "save": "writes files", "hub": "downloads code", "jit": "compiles code",
    "compile": "compiles code", "library": "registers operators", "ops": "calls operators by name",
    "overrides": "intercepts torch's functions", "utils": "torch.utils (extensions, data loaders, hooks)",
    "fx": "rewrites code", "export": "rewrites code", "package": "loads packaged code",
    "multiprocessing": "starts processes", "distributed": "talks to other processes", "classes": "loads compiled classes",
    "from_file": "reads files", "fromfile": "reads files", "tofile": "writes files", "memmap": "maps files",
    "loadtxt": "reads files", "genfromtxt": "reads files", "ctypeslib": "reaches raw memory", "lib": "numpy.lib",
    "DataSource": "reads files", "serialization": "loads files (pickles)", "get_type_hints": "evaluates strings as code",
    "ForwardRef": "evaluates strings as code", "register_module_forward_hook": "hooks into every module",
    "register_module_forward_pre_hook": "hooks into every module", "register_module_full_backward_hook": "hooks into every module",
    "compiler": "compiles code", "onnx": "exports and writes files", "profiler": "writes traces to files",
    "f2py": "compiles Fortran code",
}
FUSED = {
    "scaled_dot_product_attention": "torch's fused attention, what the exercise asks you to write",
    "multi_head_attention_forward": "torch's multi-head attention, what the exercise asks you to write",
    "MultiheadAttention": "torch's multi-head attention, what the exercise asks you to write",
}
HUGGING_FACE = {"generate": "Hugging Face's generate, what the exercise asks you to write"}
SPECIAL_ATTRIBUTES = ("__init__",)  # super().__init__(), nn.Module.__init__(self)
# Special methods a class of an answer may define (not __torch_function__, __getattr__, __new__, __del__ ...).
SPECIAL_METHODS = ("__init__", "__call__", "__len__", "__repr__", "__str__", "__getitem__", "__setitem__", "__iter__",
                   "__next__", "__contains__", "__bool__", "__post_init__", "__enter__", "__exit__")
NAME_ARGUMENT = {"getattr": 1, "setattr": 1, "delattr": 1, "hasattr": 1}
# What grading runs of a cell's top level (a print or a magic runs only in the student's notebook).
TOP_LEVEL = (ast.Import, ast.ImportFrom, ast.FunctionDef, ast.ClassDef, ast.Assign, ast.AnnAssign, ast.AugAssign)
# Package functions that every notebook may hand over (where its code runs, not what it computes).
ALWAYS_HANDED_OVER = ("attention_course.default_device", "attention_course.runtime.default_device")
# Where a notebook hands over attention itself, torch's fused attention is no shortcut.
HANDS_OVER_ATTENTION = "attention_course.kernels.causal.attention"


@dataclass(frozen=True)
class Breach:
    """A construct outside the language: what it is, and where."""

    cell: str
    line: int
    what: str

    def __str__(self) -> str:
        return f"{self.what} (line {self.line} of {self.cell})"


@dataclass(frozen=True)
class Rules:
    """What an assignment's answers may name besides the plain language.

    ``given``: names bound by the notebook's own cells -> the dotted path they come from (``""`` for
    a plain value such as ``device``); ``handed_over``: those paths an answer may use (earlier
    assignments' functions); ``fused_allowed``: torch's fused attention is fine (02 hands attention over).
    Attributes may be set on ``self`` and on objects that a class builds in the same function
    (``gqa = GroupedQueryAttention(...)``, ``nn.Linear(...)``), never on modules or classes."""

    given: dict[str, str] = field(default_factory=dict)
    handed_over: frozenset[str] = frozenset()
    fused_allowed: bool = False
    own_classes: frozenset[str] = frozenset()  # classes the student's cells define: their objects may be changed

    def forbidden_attribute(self, name: str) -> str:
        if name in ESCAPE_HATCHES:
            return f"{name}: {ESCAPE_HATCHES[name]}"
        if name in FUSED and not (self.fused_allowed and name == "scaled_dot_product_attention"):
            return f"{name}: {FUSED[name]}"
        if name in HUGGING_FACE:
            return f"{name}: {HUGGING_FACE[name]}"
        return ""

    def forbidden_given(self, name: str) -> str:
        origin = self.given.get(name)
        if origin and origin.startswith("attention_course") and origin not in self.handed_over:
            return f"{name} ({origin}): the course's own code, which an answer may not call"
        if origin and not origin.startswith("attention_course") and not _from_an_allowed_module(origin):
            return f"{name} ({origin}): the notebook imports it for its own set-up; answers may use only {', '.join(ALLOWED_IMPORTS)}"
        return ""


def _from_an_allowed_module(origin: str) -> bool:
    """Whether a given name's origin (``math``, ``torch.nn.functional``, ``math.sqrt``) lies in an allowed module."""
    return any(origin == module or origin.startswith(module + ".") for module in ALLOWED_IMPORTS)


def import_origins(source: str) -> dict[str, str]:
    """Name -> dotted path, for every import in a cell, and ``""`` for every other name it binds at its top level."""
    try:
        tree = ast.parse(as_python(source))
    except SyntaxError:
        return {}
    names = {}
    for node in tree.body:
        if isinstance(node, ast.Import):
            for alias in node.names:
                names[alias.asname or alias.name.split(".")[0]] = alias.name if alias.asname else alias.name.split(".")[0]
        elif isinstance(node, ast.ImportFrom) and node.module:
            for alias in node.names:
                names[alias.asname or alias.name] = f"{node.module}.{alias.name}"
        else:
            for target in _bound_targets(node):
                names.setdefault(target, "")
    return names


def accepted_code(source: str, label: str, rules: Rules) -> tuple[str, list[Breach]]:
    """The part of a student's cell the grader runs: its imports, definitions and assignments, when
    all of them keep to the rules ('' and the breaches otherwise). Line numbers stay as written."""
    try:
        code = as_python(source)
        tree = ast.parse(code)
    except SyntaxError as error:
        return "", [Breach(label, error.lineno or 0, f"a syntax error: {error.msg}")]
    lines = code.splitlines()
    kept = [""] * len(lines)
    for node in tree.body:
        if isinstance(node, TOP_LEVEL) or (isinstance(node, ast.Expr) and isinstance(node.value, ast.Constant)):
            first = min([node.lineno] + [d.lineno for d in getattr(node, "decorator_list", [])])
            kept[first - 1 : node.end_lineno] = lines[first - 1 : node.end_lineno]
    accepted = "\n".join(kept)
    breaches = read_cell(accepted, label, rules)
    return ("", breaches) if breaches else (accepted, [])


def read_cell(source: str, label: str, rules: Rules) -> list[Breach]:
    """Every construct of a cell (plain Python) outside the language."""
    try:
        tree = ast.parse(source)
    except SyntaxError as error:
        return [Breach(label, error.lineno or 0, f"a syntax error: {error.msg}")]
    reader = _Reader(label, rules, _imported(tree))
    reader.stores.append(_stores(tree))
    reader.visit(tree)
    return reader.found


def as_python(source: str) -> str:
    """A cell's code as plain Python: IPython's magics and shell escapes become calls."""
    from IPython.core.inputtransformer2 import TransformerManager

    return TransformerManager().transform_cell(source)


def _dotted(node) -> str:
    parts = []
    while isinstance(node, ast.Attribute):
        parts.append(node.attr)
        node = node.value
    if isinstance(node, ast.Name):
        parts.append(node.id)
        return ".".join(reversed(parts))
    return ""


def _bound_targets(node) -> list[str]:
    if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
        return [node.name]
    targets = []
    if isinstance(node, ast.Assign):
        targets = node.targets
    elif isinstance(node, (ast.AnnAssign, ast.AugAssign)):
        targets = [node.target]
    names = []
    for target in targets:
        names += [n.id for n in ast.walk(target) if isinstance(n, ast.Name)]
    return names


def _imported(tree) -> set[str]:
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names |= {alias.asname or alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            names |= {alias.asname or alias.name for alias in node.names}
    return names


def _allowed_module(module: str) -> bool:
    return module in ALLOWED_IMPORTS


class _Reader(ast.NodeVisitor):
    def __init__(self, label: str, rules: Rules, imported_here: set[str]):
        self.label, self.rules = label, rules
        self.imported = imported_here | {name for name, origin in rules.given.items() if origin}
        self.found: list[Breach] = []
        self.class_depth = 0
        self.called: set[int] = set()  # getattr-like names seen as the function of a call
        self.built: list[set[str]] = [set()]  # per function: names bound to objects a class built there
        self.loops: list[dict[str, tuple[str, ...] | None]] = [{}]  # per function: loop variables over constant strings
        self.stores: list[list[str]] = []  # per function: every name it binds, once per binding

    def breach(self, node, what: str) -> None:
        self.found.append(Breach(self.label, getattr(node, "lineno", 0), what))

    # imports ---------------------------------------------------------------------------------
    def visit_Import(self, node):
        for alias in node.names:
            if not _allowed_module(alias.name):
                self.breach(node, f"import {alias.name}: answers may import only {', '.join(ALLOWED_IMPORTS)}")
            self._name(node, alias.asname or "", store=True)

    def visit_ImportFrom(self, node):
        module = node.module or ""
        if node.level or not _allowed_module(module):
            self.breach(node, f"from {'.' * node.level}{module} import ...: answers may import only {', '.join(ALLOWED_IMPORTS)}")
            return
        for alias in node.names:
            if alias.name == "*":
                self.breach(node, f"from {module} import *: name what you import")
            elif f"{module}.{alias.name}" not in ALLOWED_IMPORTS:
                self._attribute(node, alias.name)
            self._name(node, alias.asname or "", store=True)

    # names and attributes ----------------------------------------------------------------------
    def _name(self, node, name: str, store: bool = False) -> None:
        if not name or name == "_":
            return
        if name.startswith("_"):
            self.breach(node, f"the name {name}: names that start with _ reach Python's machinery")
        elif name in DYNAMIC and not store:
            self.breach(node, f"{name}: {DYNAMIC[name]}")
        elif self.rules.forbidden_given(name) and not store:
            self.breach(node, self.rules.forbidden_given(name))

    def _attribute(self, node, attr: str) -> None:
        if attr.startswith("_") and attr not in SPECIAL_ATTRIBUTES:
            self.breach(node, f"the attribute {attr}: attributes that start with _ reach Python's machinery")
        elif self.rules.forbidden_attribute(attr):
            self.breach(node, self.rules.forbidden_attribute(attr))

    def visit_Name(self, node):
        store = isinstance(node.ctx, (ast.Store, ast.Del))
        if node.id in NAME_ARGUMENT and not store and id(node) not in self.called:
            self.breach(node, f"{node.id} passed as a value (functools.reduce(getattr, ...)): call it with the attribute written out")
        if store and node.id in self.imported:
            self.breach(node, f"{node.id} = ...: it rebinds {node.id}, which is imported")
        self._name(node, node.id, store=store)

    def visit_Attribute(self, node):
        self._attribute(node, node.attr)
        if isinstance(node.ctx, (ast.Store, ast.Del)):
            self._changed(node, node.value, f"{_dotted(node) or node.attr} = ...")
        self.generic_visit(node)

    def visit_Subscript(self, node):
        if isinstance(node.ctx, (ast.Store, ast.Del)) and _root(node) in self.imported:
            self.breach(node, f"{_root(node)}[...] = ...: it changes something imported")
        self.generic_visit(node)

    def _changed(self, node, owner, what: str) -> None:
        """An attribute of ``owner`` is set or deleted: fine on self and on objects built here."""
        root = _root(owner)
        if root in self.imported:
            self.breach(node, f"{what}: it changes something imported")
        elif root != "self" and root not in self.built[-1]:
            self.breach(node, f"{what}: set attributes only on self and on objects your code builds with a class "
                              "(for a parameter's values use .copy_())")

    def _strings(self, node) -> tuple[str, ...] | None:
        """The strings an expression can be: a constant, or a loop variable over constants; else None."""
        if isinstance(node, ast.Constant) and isinstance(node.value, str):
            return (node.value,)
        if isinstance(node, ast.Name):
            return self.loops[-1].get(node.id)
        return None

    def visit_For(self, node):
        elements = node.iter.elts if isinstance(node.iter, (ast.Tuple, ast.List)) else []
        constant = elements and all(isinstance(e, ast.Constant) and isinstance(e.value, str) for e in elements)
        # Bound nowhere else in the function: a closure cannot see it change later.
        if isinstance(node.target, ast.Name) and constant and self.stores[-1].count(node.target.id) == 1:
            self.loops[-1][node.target.id] = tuple(e.value for e in elements)
        else:
            self.loops[-1] |= {n.id: None for n in ast.walk(node.target) if isinstance(n, ast.Name)}
        self.generic_visit(node)

    def visit_Assign(self, node):
        self.generic_visit(node)
        if isinstance(node.value, ast.Call) and _builds_an_object(node.value.func, self.rules.own_classes):
            self.built[-1] |= {t.id for t in node.targets if isinstance(t, ast.Name)}

    def visit_Call(self, node):
        if isinstance(node.func, ast.Name) and node.func.id in NAME_ARGUMENT:
            self.called.add(id(node.func))
            position = NAME_ARGUMENT[node.func.id]
            name = node.args[position] if len(node.args) > position else None
            names = self._strings(name)
            if names is None:
                self.breach(node, f"{node.func.id} with a computed name: write the attribute out")
            for attribute in names or ():
                self._attribute(node, attribute)
                if node.func.id in ("setattr", "delattr"):
                    self._changed(node, node.args[0], f"{node.func.id}({_dotted(node.args[0]) or '...'}, ...)")
        self.generic_visit(node)

    # definitions -----------------------------------------------------------------------------
    def _function(self, node):
        if node.name.startswith("_") and not (self.class_depth and node.name in SPECIAL_METHODS):
            self.breach(node, f"the method {node.name}: names that start with _ reach Python's machinery "
                              f"(special methods allowed: {', '.join(SPECIAL_METHODS)})")
        if node.name in self.imported:
            self.breach(node, f"def {node.name}: it rebinds {node.name}, which is imported")
        arguments = node.args
        for arg in arguments.posonlyargs + arguments.args + arguments.kwonlyargs + [arguments.vararg, arguments.kwarg]:
            if arg is not None:
                self._name(arg, arg.arg, store=True)
        depth, self.class_depth = self.class_depth, 0
        self.built.append(set())
        self.loops.append({})
        self.stores.append(_stores(node))
        self.generic_visit(node)
        self.built.pop()
        self.loops.pop()
        self.stores.pop()
        self.class_depth = depth

    visit_FunctionDef = _function
    visit_AsyncFunctionDef = _function

    def visit_ClassDef(self, node):
        self._name(node, node.name, store=True)
        if node.name in self.imported:
            self.breach(node, f"class {node.name}: it rebinds {node.name}, which is imported")
        self.class_depth += 1
        self.generic_visit(node)
        self.class_depth -= 1

    def visit_Global(self, node):
        for name in node.names:
            if name in self.imported:
                self.breach(node, f"global {name}: it rebinds {name}, which is imported")

    visit_Nonlocal = visit_Global


def _stores(tree) -> list[str]:
    return [n.id for n in ast.walk(tree) if isinstance(n, ast.Name) and isinstance(n.ctx, ast.Store)]


def _root(node) -> str:
    while isinstance(node, (ast.Attribute, ast.Subscript)):
        node = node.value
    return node.id if isinstance(node, ast.Name) else ""


def _builds_an_object(func, own_classes: frozenset[str]) -> bool:
    """A call that makes a new object: of a class the student wrote, or of a library class (a
    capitalized name such as nn.Linear): never a module or a class itself."""
    if isinstance(func, ast.Name):
        return func.id in own_classes
    return isinstance(func, ast.Attribute) and func.attr[:1].isupper() and bool(_dotted(func))


def read_function(obj) -> list[Breach]:
    """The breaches of the notebook cell that defines a function or class, read in the notebook's
    own process (the visible checks): the rules as the grader applies them, the given names taken
    from the notebook's namespace. Code that was not written in a notebook cell is not read."""
    import linecache
    import os

    obj = getattr(obj, "__func__", obj)  # a bound method: its function
    if not (inspect.isfunction(obj) or inspect.isclass(obj)):
        obj = type(obj)  # an object of the student's class
    functions = [obj] if inspect.isfunction(obj) else [m for m in vars(obj).values() if inspect.isfunction(m)]
    files = {f.__code__.co_filename for f in functions if not os.path.exists(f.__code__.co_filename)}
    found = []
    for filename in sorted(files):
        lines = linecache.getlines(filename)
        if lines:
            namespace = next(f.__globals__ for f in functions if f.__code__.co_filename == filename)
            found += accepted_code("".join(lines), f"the cell that defines {obj.__name__}", _rules_of(namespace))[1]
    return found


def _rules_of(namespace: dict) -> Rules:
    """The rules of a notebook, from its namespace: what each name holds, and where that comes from."""
    given, classes = {}, set()
    for name, value in namespace.items():
        if inspect.ismodule(value):
            given[name] = value.__name__
        elif inspect.isclass(value) and value.__module__ == namespace.get("__name__"):
            classes.add(name)
        elif (inspect.isfunction(value) or inspect.isclass(value)) and value.__module__.startswith("attention_course"):
            given[name] = f"{value.__module__}.{value.__qualname__}"  # objects such as a model are plain values, as for the grader
    handed_over = frozenset(ALWAYS_HANDED_OVER).union(*(record.handed_over for record in RECORDS))  # any notebook's
    return Rules(given=given, handed_over=handed_over, fused_allowed=HANDS_OVER_ATTENTION in given.values(),
                 own_classes=frozenset(classes))
