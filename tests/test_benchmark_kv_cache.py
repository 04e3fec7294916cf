"""Smoke test of benchmarks/kv_cache_latency.py and the shared measuring code: tiny sizes; the
table's structure is checked, not the timings."""

import importlib.util
import re

import pytest

from attention_course.decode_latency import LatencyPoint, crossover, format_table, linear_fit
from course_copy import ROOT


def load_script():
    spec = importlib.util.spec_from_file_location("kv_cache_latency", ROOT / "benchmarks" / "kv_cache_latency.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_benchmark_prints_one_row_per_loop_and_context(capsys):
    load_script().main(["--model", "local", "--n-layer", "1", "--device", "cpu", "--contexts", "8", "12",
                        "--new-tokens", "2", "--repeats", "1"])
    out = capsys.readouterr().out
    assert "device: cpu" in out and "model: local: 1 layers" in out
    header = next(line for line in out.splitlines() if line.startswith("loop"))
    assert "with cache (ms/token)" in header and "without cache (ms/token)" in header and "speedup" in header
    rows = re.findall(r"^(course|hf)\s+(\d+)\s+([\d.]+)\s+([\d.]+)\s+([\d.]+|inf)x$", out, flags=re.M)
    assert [(loop, int(context)) for loop, context, *_ in rows] == [("course", 8), ("course", 12), ("hf", 8), ("hf", 12)]


def test_contexts_beyond_the_model_are_refused():
    from attention_course.decode_latency import measure_decode_latency
    from attention_course.models import local_gpt2

    model = local_gpt2(device="cpu", n_layer=1, n_positions=16).model
    with pytest.raises(ValueError, match="context"):
        measure_decode_latency(model, [32], n_new=2, repeats=1)


def test_table_fit_and_crossover():
    points = [LatencyPoint("course", c, 1e-3 + 1e-6 * c, 1e-3 + 4e-6 * c) for c in (16, 64, 256, 1024)]
    table = format_table(points)
    assert table.count("\n") == 5 and "course" in table
    fixed, slope = linear_fit([p.context for p in points], [p.uncached_s for p in points])
    assert fixed == pytest.approx(1e-3) and slope == pytest.approx(4e-6)
    assert crossover(points) == 64  # 1.19x at 64, 1.0x+ at 16 is below the 1.1 margin
    assert crossover([LatencyPoint("hf", 16, 2.0, 1.0)]) is None


def test_fit_parts_are_never_negative():
    assert linear_fit([16, 64, 256], [3e-3, 2e-3, 1e-3]) == (pytest.approx(2e-3), 0.0)
    fixed, slope = linear_fit([16, 64, 256], [0.0, 1e-3, 5e-3])
    assert fixed == 0.0 and slope > 0
