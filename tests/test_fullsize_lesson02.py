"""Lesson 02's full-size parameters (what a student on Colab runs, COURSE_QUICK unset) fed to the
functions they feed, on a CPU runtime and on a GPU runtime: the parameter cell is read from the
notebook and run as it is, so a value that would stop the lesson at full size fails here, in CI,
which otherwise runs the quick sizes. (The old values, 16 new tokens after a context of 16, did.)"""

import re

import nbformat
import pytest
import torch

from attention_course.decode_latency import check_latency_parameters, measure_decode_latency, timed_forward_passes
from attention_course.gpt2_forward import count_decode_flops, count_flops, gpt2_block
from course_copy import ROOT

LESSON = ROOT / "notebooks" / "02_kv_cache.ipynb"


def cell_starting(prefix: str) -> str:
    sources = [c.source for c in nbformat.read(LESSON, as_version=4).cells if c.source.startswith(prefix)]
    assert len(sources) == 1, f"{LESSON.name}: expected one cell starting with {prefix!r}, found {len(sources)}"
    return sources[0]


def full_size_parameters(device_type: str, monkeypatch) -> dict:
    """The namespace after the lesson's imports cell and its parameter cell, at full size on ``device_type``."""
    monkeypatch.setenv("COURSE_QUICK", "0")
    namespace: dict = {}
    exec(compile(cell_starting("import math\n"), "<imports>", "exec"), namespace)  # noqa: S102 - the lesson's own cell
    namespace["device"] = torch.device(device_type)  # what default_device() gives on that runtime
    threads = torch.get_num_threads()
    try:
        exec(compile(cell_starting("# Parameters."), "<parameters>", "exec"), namespace)  # noqa: S102
    finally:
        torch.set_num_threads(threads)
    assert namespace["QUICK"] is False
    return namespace


@pytest.fixture(scope="module")
def tiny_model():
    from attention_course.models import local_gpt2

    return local_gpt2(device="cpu", n_layer=1, n_head=2, n_embd=32).model  # GPT-2's 1024 positions, almost no compute


@pytest.mark.parametrize("device_type", ["cpu", "cuda"])
def test_full_size_parameters_run_through_what_they_feed(device_type, monkeypatch, tiny_model):
    p = full_size_parameters(device_type, monkeypatch)
    assert tiny_model.config.n_positions == 1024  # GPT-2's, real and local alike
    # Section 5: the very call of the lesson, on a tiny model of GPT-2's positions (the timings are not checked).
    points = measure_decode_latency(tiny_model, p["CONTEXTS"], n_new=p["N_NEW"], repeats=p["REPEATS"])
    assert [(q.loop, q.context) for q in points] == [(loop, c) for loop in ("course", "hf") for c in p["CONTEXTS"]]
    assert p["GPT2_POSITIONS"] == 1024
    # Section 2: the FLOP counts, on the meta device (shapes only).
    block = gpt2_block(device="meta")
    for t in p["FLOP_TOKENS"]:
        assert count_flops(block, t) == count_flops(block, t, hugging_face=True)
    assert len(count_decode_flops(block, p["DECODE_STEPS"])) == p["DECODE_STEPS"]


def test_the_timing_text_states_the_gpu_runs_forward_passes(monkeypatch):
    p = full_size_parameters("cuda", monkeypatch)
    passes = timed_forward_passes(p["CONTEXTS"], p["N_NEW"], p["REPEATS"])
    text = cell_starting("## 5. Time per generated token")
    stated = int(re.search(r"makes about ([\d,]+) forward passes", text).group(1).replace(",", ""))
    assert passes["passes_cached"] + passes["passes_uncached"] == stated == 900
    assert p["CONTEXTS"][-1] == 1024 and "contexts up to 1024, 8 steps per point, median of 3" in text
    cpu = full_size_parameters("cpu", monkeypatch)
    assert max(cpu["CONTEXTS"]) == 512 and "2 cores, contexts up to 512" in text


@pytest.mark.parametrize("contexts,n_new,repeats", [
    ([16, 32, 64, 128, 256, 512, 768, 1024], 16, 3),  # the lesson's old full-size values: no prompt before 16 new tokens
    ([32, 2048], 4, 2),  # beyond GPT-2's positions
    ([32], 0, 2),
    ([32], 4, 0),
    ([], 4, 2),
])
def test_parameters_the_lesson_cannot_run_are_refused_before_anything_runs(contexts, n_new, repeats):
    with pytest.raises(ValueError):
        check_latency_parameters(contexts, n_new, repeats, 1024)


def test_timed_forward_passes_counts_what_measure_decode_latency_runs(tiny_model):
    calls = []
    handle = tiny_model.register_forward_pre_hook(lambda module, args: calls.append(args[0].shape[1] if args else None))
    try:
        measure_decode_latency(tiny_model, [8, 12], n_new=3, repeats=2, loops=("hf",))
    finally:
        handle.remove()
    counted = timed_forward_passes([8, 12], 3, 2, n_loops=1)
    assert len(calls) == counted["passes_cached"] + counted["passes_uncached"]
