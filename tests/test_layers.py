"""The package's layers, readable from its folders: each module imports only from its own layer or
the ones below it, so nothing points back up (and no two layers import each other)."""

import ast
from pathlib import Path

import pytest

import attention_course

PACKAGE = Path(attention_course.__file__).parent
# From the bottom up; a module belongs to the first prefix it matches.
LAYERS = [
    ("the course's data and reference kernels", ("attention_course.runtime", "attention_course.timing",
                                                 "attention_course.assignments", "attention_course.tolerances",
                                                 "attention_course.kernels")),
    ("models, oracles and measurements", ("attention_course.hf_compat", "attention_course.models", "attention_course.model_configs",
                                          "attention_course.gpt2_forward", "attention_course.memory",
                                          "attention_course.decode_attention", "attention_course.decode_latency",
                                          "attention_course.exercises.kernel")),
    ("the exercises' specs and the answer language", ("attention_course.exercises", "attention_course.answer_rules")),
    ("what the notebooks' test cells call", ("attention_course.checks",)),
    ("grading", ("attention_course.grading", "attention_course.cli")),
]


def _layer(module: str) -> int:
    if module == "attention_course":
        return 0
    for index, (_, prefixes) in enumerate(LAYERS):
        if any(module == prefix or module.startswith(prefix + ".") for prefix in prefixes):
            return index
    raise LookupError(f"{module} is in no layer of tests/test_layers.py")


def _modules() -> dict[str, Path]:
    found = {}
    for path in PACKAGE.rglob("*.py"):
        parts = ("attention_course", *path.relative_to(PACKAGE).with_suffix("").parts)
        found[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return found


@pytest.mark.parametrize("module", sorted(_modules()))
def test_a_module_imports_nothing_above_its_layer(module):
    path = _modules()[module]
    for node in ast.walk(ast.parse(path.read_text())):
        targets = [node.module] if isinstance(node, ast.ImportFrom) and node.module else \
                  [alias.name for alias in node.names] if isinstance(node, ast.Import) else []
        for target in targets:
            if target.split(".")[0] == "attention_course" and target != "attention_course":
                assert _layer(target) <= _layer(module), (
                    f"{module} ({LAYERS[_layer(module)][0]}) imports {target} ({LAYERS[_layer(target)][0]}), a layer above it")
