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
        # a ratio may print as 0.00x when a shared machine stalls one tiny sample: the structure is what is checked
        assert len(times) == len(PATHS) and all(float(ms) > 0 and float(r) >= 0 for ms, r in times)
        if name == "MHA":
            assert all(r == "1.00" for _, r in times)
    assert re.search(r"MQA: cache 8x smaller than MHA's; MHA's time / this: grouped [\d.]+x", out)
    assert re.search(r"peak memory a MQA step allocates .*repeat_kv [\d.]+", out)
    # bytes moved per step, MHA's over this one's: for grouped, exactly the model's ratio
    from attention_course.decode_attention import step_traffic, traffic_bytes
    grouped = {g: traffic_bytes(step_traffic(batch, n_heads, g, head_dim, 48, torch.float32)) for g in (8, 1)}
    assert re.search(rf"MQA: grouped {grouped[1] / 2**20:.2f} MiB \({grouped[8] / grouped[1]:.2f}x\)", out)


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


# ----------------------------------------------------------------------------------------------
# Bytes moved per decode step: the model against the operations PyTorch runs
# ----------------------------------------------------------------------------------------------

from attention_course.decode_attention import MODELLED_PATHS, measure_traffic, step_traffic, traffic_bytes  # noqa: E402


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16], ids=str)
@pytest.mark.parametrize("shape", [(1, 32, 32, 256, 128), (1, 32, 1, 256, 128), (2, 8, 2, 300, 16), (3, 6, 3, 17, 8)],
                         ids=lambda s: "B{}-H{}-G{}-T{}-d{}".format(*s))
def test_byte_model_equals_the_operations_pytorch_runs_on_a_cpu(shape, dtype):
    batch, n_heads, n_kv_heads, context, head_dim = shape
    q, k, v = decode_inputs(batch, n_heads, n_kv_heads, context, head_dim, dtype)
    for path in MODELLED_PATHS:
        model = step_traffic(batch, n_heads, n_kv_heads, head_dim, context, dtype, path)
        measured = measure_traffic(decode_step(path), q, k, v)
        assert [(t.read, t.written) for t in model] == [(t.read, t.written) for t in measured], (path, measured)


def test_scores_cost_the_same_for_every_g_and_bound_mqa_below_h():
    """H = 32, d = 128, float16: the unfused step moves the H x T scores and probabilities several
    times whatever G (more bytes than MQA's whole cache), so MHA / MQA is bounded near 12-15x, not 32x;
    a fused kernel moves the cache, q and the output only, and the bound approaches H."""
    n_heads, head_dim, context = 32, 128, 8192
    cache = {g: layer_cache_bytes(1, g, head_dim, context, torch.float16) for g in (32, 1)}
    for device, per_score in (("cpu", 2 + 4 + 6 + 8 + 6 + 2), ("cuda", 2 + 4 + 6 + 6 + 2)):
        moved = {g: traffic_bytes(step_traffic(1, n_heads, g, head_dim, context, torch.float16, device=device)) for g in (32, 1)}
        q_and_output = 2 * n_heads * head_dim * 2
        assert moved[32] - cache[32] == moved[1] - cache[1] == n_heads * context * per_score + q_and_output
        assert moved[1] - cache[1] > cache[1]  # the scores' traffic exceeds MQA's whole cache
        assert 12 < moved[32] / moved[1] < 15
    fused = {g: traffic_bytes(step_traffic(1, n_heads, g, head_dim, context, torch.float16, "sdpa")) for g in (32, 1)}
    assert 31.5 < fused[32] / fused[1] < 32
    assert traffic_bytes(step_traffic(1, 32, 1, 128, 64, torch.float32, "repeat_kv")) > traffic_bytes(
        step_traffic(1, 32, 32, 128, 64, torch.float32, "grouped"))  # the copy costs more than MHA itself


def test_byte_model_refuses_what_it_does_not_model():
    with pytest.raises(ValueError, match="no byte model"):
        step_traffic(1, 8, 1, 16, 8, path="broadcast")
    with pytest.raises(ValueError, match="not divisible"):
        step_traffic(1, 6, 4, 16, 8)


def test_measured_points_carry_the_bytes_their_path_moves():
    points = measure_decode_attention(8, [8, 1], [32], head_dim=16, paths=("grouped", "sdpa", "broadcast"), repeats=1,
                                      min_seconds=1e-4, working_set=2**16)
    for p in points:
        expected = 0 if p.path == "broadcast" else traffic_bytes(step_traffic(1, 8, p.n_kv_heads, 16, 32, torch.float32, p.path))
        assert p.step_bytes == expected
