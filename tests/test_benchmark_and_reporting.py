"""The benchmark runs end to end in --quick mode (no timing assertions), and the results table is right."""

import csv

import torch

from ttt_hf.bench import benchmark, measure
from ttt_hf.modeling import fused_mlp


def test_quick_benchmark_writes_table_csv_and_plot(tmp_path, capsys):
    rows = benchmark.main(["--quick", "--output_dir", str(tmp_path), "--repeats", "1", "--warmup", "0"])
    names = {r["name"] for r in rows if r["level"] == "layer"}
    assert names == set(benchmark.LAYER_MIXERS)  # "(triton)" too: the tests run Triton's CPU interpreter
    assert {r["tokens"] for r in rows if r["level"] == "layer"} == {16, 64}
    assert all(r["forward_ms"] > 0 and r["forward_backward_ms"] > 0 and r["memory_mb"] > 0 for r in rows)
    with open(tmp_path / "benchmark_cpu_float32_quick.csv") as f:
        written = list(csv.DictReader(f))
    assert len(written) == len(rows) and written[0]["machine"].endswith(torch.__version__)
    assert (tmp_path / "layers_cpu_float32_quick.png").stat().st_size > 10_000
    assert "fwd+bwd ms" in capsys.readouterr().out


def test_fused_kernel_rows_run_only_where_the_kernels_do(monkeypatch):
    assert not measure.repeats_another_row("ttt_mlp (triton)", "cpu")  # the tests' interpreter
    monkeypatch.setattr(fused_mlp, "_INTERPRETED", False)
    assert measure.repeats_another_row("ttt_mlp (triton)", "cpu")  # CPU: the fallback, a repeat of "ttt_mlp"
    assert not measure.repeats_another_row("ttt_mlp", "cpu")


def test_activation_memory_counts_saved_storages_once():
    x = torch.randn(1000, requires_grad=True)  # 4000 bytes
    w = torch.randn(1000, requires_grad=True)

    def step():
        y = x * w  # saves x and w
        (y * y).sum().backward()  # saves y

    assert measure.memory_of(step, "cpu", [w]) == 2 * 4000  # x and y; the parameter w is excluded


def test_precision_report_float32_exact_and_bfloat16_close():
    """Against float64: float32 to ~1e-6, bfloat16 autocast to ~1e-2, and the inner step still learns."""
    from ttt_hf.bench.precision import precision_rows

    rows = precision_rows(tokens=64, width=24, heads=3, batch=2)
    assert {r["name"] for r in rows} == {
        n for n in benchmark.LAYER_MIXERS if "autograd" not in n and "triton" not in n
    }
    for r in rows:
        errors = (r["output_error"], r["input_grad_error"], r["param_grad_error"])
        assert max(errors) < (1e-5 if r["dtype"] == "float32" else 5e-2), r
        assert min(errors) > (0 if r["dtype"] == "float32" else 1e-4), r  # bfloat16 really ran
        if r["inner_loss_ratio"] is not None:
            assert abs(r["inner_loss_ratio"] - r["reference_inner_loss_ratio"]) < 1e-2, r
            assert r["reference_inner_loss_ratio"] < 1.0  # one inner step lowers the loss
