"""`ttt-hf throughput`: steady training images/s per data path and batch, and accuracy against batch size."""

import pytest

from ttt_hf import zoo
from ttt_hf.bench import throughput

TINY = ["--config_overrides", "hidden_size=12,num_hidden_layers=1,num_attention_heads=3,intermediate_size=24",
        "--use_cpu", "true", "--max_train_samples", "256"]  # fmt: skip


def test_throughput_rows_and_table_for_both_paths(tmp_path, capsys):
    rows = throughput.main(["--setting", "digits-pixel", "--mixers", "mlp,attn", "--steps", "4",
                            "--csv", str(tmp_path / "speed.csv"), *TINY])  # fmt: skip
    assert [(r["mixer"], r["path"]) for r in rows] == [("mlp", "per-image"), ("mlp", "device"),
                                                       ("attn", "per-image"), ("attn", "device")]  # fmt: skip
    assert all(r["images_per_second"] > 0 and r["batch"] == 64 and r["test_accuracy"] is None for r in rows)
    printed = capsys.readouterr().out
    assert "| digits-pixel | mlp | 64 |" in printed and "device / per-image" in printed
    assert (tmp_path / "speed.csv").read_text().startswith("setting,mixer,entry,path,batch,steps,images_per_second")


def test_accuracy_against_batch_scales_the_learning_rate_by_the_square_root():
    entry = zoo.ZOO["ttt-vit-mlp-digits-pixel"]  # the default recipe: lr 2e-3 at batch 64
    assert throughput.scaled_learning_rate(entry, 256) == pytest.approx(4e-3)
    rows = throughput.main(["--setting", "digits-pixel", "--mixers", "mlp", "--paths", "device", "--batches", "32,128",
                            "--epochs", "1", *TINY])  # fmt: skip
    assert [r["batch"] for r in rows] == [32, 128]
    assert [r["learning_rate"] for r in rows] == pytest.approx([2e-3 * 0.5**0.5, 2e-3 * 2**0.5], rel=1e-2)
    assert all(0 <= r["test_accuracy"] <= 1 and r["epochs"] == 1 for r in rows)
    assert "| digits-pixel | mlp | 128 | 0.00283 | 1 |" in throughput.table(rows)
