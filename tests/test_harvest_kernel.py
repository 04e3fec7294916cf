"""The harvest kernel is clean: the course package is neither imported in it, nor importable, nor
(where the grader can isolate kernels) on its file system; the harvest notebook's first cell gives it
the kernel halves and the handed-over objects, and nothing else of the package is there."""

import asyncio
import json

import nbformat
import pytest

from attention_course.grading.execute import execute_notebook
from attention_course.grading.limits import Limits, confined
from attention_course.grading.harvest_kernel import loader_source
from attention_course.grading.isolation import package_folder
from attention_course.grading.zygote import Zygote

PROBE = """
import importlib, json, os, sys
def _importable(name):
    try:
        importlib.import_module(name)
        return True
    except ImportError:
        return False
print(json.dumps({
    "loaded before the harness": sorted(name for name in sys.modules if name.startswith("attention_course")),
    "package folder visible": os.path.exists(PACKAGE),
}))
"""
AFTER = """
print(json.dumps({name: _importable(name) for name in (
    "attention_course.kernels.kv_cache", "attention_course.checks.diagnosis", "attention_course.grading.verdicts.judge",
    "attention_course.exercises", "attention_course.hf_compat", "attention_course.exercises.kernel.harvest",
    "attention_course.kernels.causal", "attention_course.gpt2_forward")}))
print(json.dumps(sorted(name for name in dir(sys.modules["attention_course.kernels.causal"]) if not name.startswith("__"))))
"""


@pytest.fixture(scope="module")
def probed():
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(PROBE.replace("PACKAGE", repr(package_folder()))),
                                         nbformat.v4.new_code_cell(loader_source("02_kv_cache")),
                                         nbformat.v4.new_code_cell(AFTER)])
    limits, _ = confined(Limits())
    with Zygote() as zygote:
        status = asyncio.run(execute_notebook(nb, zygote, limits, clean=True))
    assert status == "ok", status
    printed = [json.loads(line) for cell in nb.cells for output in cell.outputs if output.get("name") == "stdout"
               for line in output["text"].splitlines()]
    return limits, printed


def test_the_package_is_not_in_the_harvest_kernel_nor_on_its_file_system(probed):
    limits, printed = probed
    assert printed[0]["loaded before the harness"] == []
    if limits.isolate:
        assert printed[0]["package folder visible"] is False


def test_after_the_harness_only_kernel_halves_and_hand_overs_are_there(probed):
    _, printed = probed
    assert printed[1] == {
        "attention_course.kernels.kv_cache": False, "attention_course.checks.diagnosis": False,
        "attention_course.grading.verdicts.judge": False, "attention_course.exercises": True,
        "attention_course.hf_compat": False, "attention_course.exercises.kernel.harvest": True,
        "attention_course.kernels.causal": True, "attention_course.gpt2_forward": True}
    # 02 hands over attention, causal_mask, split_heads and merge_heads: 01's gpt2_attention is not there.
    assert "gpt2_attention" not in printed[2] and {"attention", "causal_mask", "split_heads", "merge_heads"} <= set(printed[2])
