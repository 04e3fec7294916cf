"""Quiz items judged in the grader's process: the hidden tests' own code, replayed with the
student's answers as plain values.

A first replay of the source notebook's quiz cells (setup cell first) records every call of
``check_number``, ``check_choice`` and ``check_formula`` with its key and misconceptions: the keys
stay where the course computes them, in the hidden tests. The harvest then reads each answer by
name and calls each formula on the listed configurations plus fresh ones (each listed one with its
first size multiplied by a random factor), and judging calls the same checks with those values.
"""

import ast
import contextlib
import functools
import hashlib
import io
from dataclasses import dataclass

import torch

from attention_course.checks import quiz as checks
from attention_course.answer_rules import as_python
from attention_course.grading.cells import grade_id, is_test_cell
from attention_course.exercises.kernel.plain_data import decode

CHECKS = ("check_number", "check_choice", "check_formula")


@dataclass(frozen=True)
class Call:
    kind: str  # one of CHECKS
    args: tuple
    kwargs: dict

    @property
    def name(self) -> str:
        return self.args[0]

    @property
    def configs(self) -> list[tuple]:
        return list(self.args[2] if len(self.args) > 2 else self.kwargs["configs"])


def is_quiz_cell(cell) -> bool:
    if not is_test_cell(cell):
        return False
    try:
        tree = ast.parse(cell.source)
    except SyntaxError:
        return False
    return any(isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id in CHECKS
               for node in ast.walk(tree))


def _setup_namespace(cells) -> dict:
    namespace = {"get_ipython": lambda: None}
    for cell in cells:
        if cell.cell_type == "code" and grade_id(cell) == "setup":
            with contextlib.redirect_stdout(io.StringIO()):
                exec(compile(as_python(cell.source), "<setup>", "exec"), namespace)  # noqa: S102 - the instructor's cell
    return namespace


def _keys(source_cells: tuple) -> dict[str, list[Call]]:
    namespace = _setup_namespace(source_cells)
    keys: dict[str, list[Call]] = {}
    for cell in source_cells:
        if not is_quiz_cell(cell):
            continue
        calls = keys.setdefault(grade_id(cell), [])
        for kind in CHECKS:
            namespace[kind] = functools.partial(lambda kind, *args, **kwargs: calls.append(Call(kind, args, kwargs)), kind)
        for name in _answer_names(cell.source):
            namespace.setdefault(name, None)  # the student's answers: not needed to compute the keys
        with contextlib.redirect_stdout(io.StringIO()):
            exec(compile(cell.source, f"<{grade_id(cell)}>", "exec"), namespace)  # noqa: S102 - the instructor's cell
    for calls in keys.values():  # each formula's key, computed once per configuration
        for index, call in enumerate(calls):
            if call.kind == "check_formula" and len(call.args) > 3 and callable(call.args[3]):
                calls[index] = Call(call.kind, (*call.args[:3], functools.cache(call.args[3]), *call.args[4:]), call.kwargs)
    return keys


def _answer_names(source: str) -> set[str]:
    """The names a cell's checks are given as answers (their second argument)."""
    return {node.args[1].id for node in ast.walk(ast.parse(source))
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id in CHECKS
            and len(node.args) > 1 and isinstance(node.args[1], ast.Name)}


_KEYS: dict[str, dict[str, list[Call]]] = {}


def quiz_keys(source_nb) -> dict[str, list[Call]]:
    """Quiz test cell -> the check calls of its code, keys included; computed once per source."""
    digest = hashlib.sha256("\x00".join(c.source for c in source_nb.cells).encode()).hexdigest()
    if digest not in _KEYS:
        _KEYS[digest] = _keys(tuple(source_nb.cells))
    return _KEYS[digest]


def fresh_configs(configs: list[tuple], seed: int) -> list[tuple]:
    generator = torch.Generator().manual_seed(seed)
    fresh = []
    for config in configs:
        factor = int(torch.randint(2, 10, (1,), generator=generator))
        fresh.append((config[0] * factor, *config[1:]))
    return fresh


def plan(keys: dict[str, list[Call]], seed: int) -> dict:
    """What the harvest must read: answer names, and each formula's configurations."""
    answers, formulas = [], {}
    for calls in keys.values():
        for call in calls:
            if call.kind == "check_formula":
                listed = formulas.setdefault(call.name, [])
                listed += [list(c) for c in call.configs if list(c) not in listed]
            elif call.name not in answers:
                answers.append(call.name)
    for name, listed in formulas.items():
        listed += [list(c) for c in fresh_configs([tuple(c) for c in listed], seed)]
    return {"answers": answers, "formulas": formulas}


class _Replayed:
    """The student's formula in the grader: the values their function returned in their process."""

    def __init__(self, name: str, configs: list, values: list):
        self.name = name
        self.values = {tuple(config): value for config, value in zip(configs, values if isinstance(values, list) else [])}

    def __call__(self, *config):
        result = self.values.get(tuple(config))
        if not isinstance(result, dict):
            raise RuntimeError("no value came back from the notebook")
        if result.get("forbidden"):
            raise RuntimeError(f"a forbidden shortcut: {result['forbidden']}")
        if "value" not in result:
            name, _, message = str(result.get("error", "RuntimeError: no value came back"))[:300].partition(": ")
            raise type(name if name.isidentifier() else "RuntimeError", (Exception,), {})(message)
        return decode(result["value"])


def judge_quiz_cell(calls: list[Call], harvest_plan: dict, harvested: dict) -> str:
    """'' when every check of the cell passes with the harvested answers, else its message."""
    answers = harvested.get("answers") if isinstance(harvested.get("answers"), dict) else {}
    formulas = harvested.get("formulas") if isinstance(harvested.get("formulas"), dict) else {}
    for call in calls:
        check = getattr(checks, call.kind)
        if call.kind == "check_formula":
            configs = harvest_plan["formulas"][call.name]
            answer = _Replayed(call.name, configs, formulas.get(call.name))
            args = list(call.args)
            if len(args) > 3 or "expected" in call.kwargs:  # the hidden check: listed and fresh configurations
                args[2] = [tuple(c) for c in configs]
        elif call.name not in answers:
            return f"{call.name}: no answer came back from the notebook (the grader's harvest after this cell did not run)"
        else:
            args = list(call.args)
            answer = decode(answers[call.name])
        args[1] = answer
        try:
            with contextlib.redirect_stdout(io.StringIO()):
                check(*args, **call.kwargs)
        except AssertionError as error:
            return str(error)
    return ""
