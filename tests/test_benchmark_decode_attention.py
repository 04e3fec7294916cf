"""Smoke test of benchmarks/decode_attention.py and the shared measuring code: tiny sizes; the table's
structure and its exact cache-bytes ratios are checked, not the timings."""

import importlib.util
import re

import pytest
import torch

from attention_course.decode_attention import (PATHS, DecodePoint, decode_inputs, decode_step, format_table,
                                               layer_cache_bytes, measure_decode_attention, ratios_to_mha)
from attention_course.memory import peak_memory
from course_copy import ROOT

ROW = re.compile(r"^\s*(\d+)\s+(MHA|MQA|GQA-\d+)\s+(\d+)\s+(\d+)\s+([\d.]+)x((?:\s+\|\s+[\d.]+\s+[\d.]+x)+)\s+\|\s+([\d.]+|inf)$",
                 flags=re.M)


def load_script():
    spec = importlib.util.spec_from_file_location("decode_attention_benchmark", ROOT / "benchmarks" / "decode_attention.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_benchmark_prints_one_row_per_context_and_g_with_exact_cache_ratios(capsys):
    n_heads, head_dim, batch = 8, 16, 2
    load_script().main(["--device", "cpu", "--heads", str(n_heads), "--kv-heads", "4", "2", "1", "--head-dim", str(head_dim),
                        "--batch", str(batch), "--contexts", "16", "48", "--repeats", "1", "--min-ms", "0.1",
                        "--working-set-mib", "0.05"])
    out = capsys.readouterr().out
    assert "device: cpu" in out and "H = 8 query heads, d = 16, batch 2, float32" in out
    header = next(line for line in out.splitlines() if line.lstrip().startswith("context"))
    assert header.count("MHA/this") == 1 + len(PATHS) and all(f"{path} ms" in header for path in PATHS)
    rows = ROW.findall(out)
    assert [(int(c), v, int(g)) for c, v, g, *_ in rows] == [
        (context, name, g) for context in (16, 48) for name, g in (("MHA", 8), ("GQA-4", 4), ("GQA-2", 2), ("MQA", 1))]
    mha_bytes = {}
    for context, name, g, nbytes, ratio, per_path, _ in rows:
        context, g, nbytes = int(context), int(g), int(nbytes)
        assert nbytes == 2 * batch * g * context * head_dim * 4  # keys and values, float32
        mha_bytes.setdefault(context, nbytes)
        assert mha_bytes[context] == nbytes * (n_heads // g) and ratio == f"{n_heads / g:.2f}"  # MHA / GQA = H / G exactly
        times = re.findall(r"\|\s+([\d.]+)\s+([\d.]+)x", per_path)
        assert len(times) == len(PATHS) and all(float(ms) > 0 and float(r) > 0 for ms, r in times)
        if name == "MHA":
            assert all(r == "1.00" for _, r in times)
    assert re.search(r"MQA: cache 8x smaller than MHA's; MHA's time / this: grouped [\d.]+x", out)
    assert re.search(r"peak memory a MQA step allocates .*repeat_kv [\d.]+", out)


def test_unknown_paths_and_uneven_groups_are_refused():
    with pytest.raises(ValueError, match="unknown path"):
        measure_decode_attention(4, [4], [8], head_dim=8, paths=["fast"])
    with pytest.raises(ValueError, match="not divisible"):
        decode_inputs(1, 6, 4, 8, 8)
    with pytest.raises(SystemExit, match="equal groups"):
        load_script().main(["--heads", "6", "--kv-heads", "4", "--contexts", "8", "--device", "cpu"])


def test_every_path_computes_the_same_step():
    q, k, v = decode_inputs(2, 8, 2, 40, 16)
    expected = torch.nn.functional.scaled_dot_product_attention(q, k.repeat_interleave(4, 1), v.repeat_interleave(4, 1))
    for path in PATHS:
        torch.testing.assert_close(decode_step(path)(q, k, v), expected, rtol=1e-5, atol=1e-6)


def test_peak_memory_sees_the_copies_of_repeat_kv_and_not_the_grouped_kernel():
    q, k, v = decode_inputs(2, 8, 1, 256, 32)
    kv_bytes = 2 * k.numel() * k.element_size()
    assert layer_cache_bytes(2, 1, 32, 256, torch.float32) == kv_bytes
    copied = peak_memory(decode_step("repeat_kv"), q, k, v)
    assert copied >= 8 * kv_bytes  # k and v repeated for 8 query heads, both alive at once
    assert peak_memory(decode_step("grouped"), q, k, v) < kv_bytes / 2  # scores and output only
    assert peak_memory(lambda x: x.clone(), k) == k.numel() * k.element_size()
    assert peak_memory(lambda x: x.transpose(1, 2), k) == 0  # a view allocates nothing


def test_ratios_and_table_from_given_points():
    points = [DecodePoint(64, 8, g, 16, 1, "grouped", 1e-3 * g / 8, layer_cache_bytes(1, g, 16, 64, torch.float32))
              for g in (8, 2, 1)]
    assert ratios_to_mha(points) == {(64, 8, "grouped"): 1.0, (64, 2, "grouped"): pytest.approx(4.0),
                                     (64, 1, "grouped"): pytest.approx(8.0)}
    table = format_table(points)
    assert table.count("\n") == 4 and "GQA-2" in table and "8.00x" in table
