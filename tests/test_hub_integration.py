"""Save/load, the Auto classes, remote code without ttt_hf, the image processor and the pipeline."""

import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file
from transformers import (
    AutoConfig,
    AutoImageProcessor,
    AutoModel,
    AutoModelForImageClassification,
    pipeline,
)

from ttt_hf import TTTViTForImageClassification, TTTViTImageProcessor, TTTViTModel

from .conftest import HIDE_TTT_HF, tiny_config

LABELS = ["cat", "dog", "eel"]


def saved_classifier(path, **overrides):
    config = tiny_config(
        num_labels=3, id2label=dict(enumerate(LABELS)), label2id={n: i for i, n in enumerate(LABELS)}, **overrides
    )
    model = TTTViTForImageClassification(config)
    torch.nn.init.normal_(model.classifier.weight, std=0.5)
    model.save_pretrained(path)
    return model.eval()


@pytest.mark.parametrize(
    "overrides", [dict(), dict(mixer="ttt_linear"), dict(learn_inner_init=False), dict(position_embedding="learned")]
)
def test_save_load_round_trip_is_exact(tmp_path, overrides):
    model = saved_classifier(tmp_path, **overrides)
    files = set(os.listdir(tmp_path))
    assert {"config.json", "model.safetensors", "preprocessor_config.json"} <= files
    assert not any(f.endswith((".bin", ".pt", ".pth")) for f in files)
    state = load_file(tmp_path / "model.safetensors")
    has_w0 = model.config.mixer == "ttt_mlp"  # MTTT-Linear's W_0 = 0 is structural
    assert ("ttt_vit.layers.0.mixer.inner_init_0" in state) == has_w0  # frozen W_0 buffers are saved too
    loaded = AutoModelForImageClassification.from_pretrained(tmp_path).eval()
    assert type(loaded) is TTTViTForImageClassification
    x = torch.randn(2, 3, 8, 8)
    torch.testing.assert_close(loaded(x).logits, model(x).logits, rtol=0, atol=0)


def test_auto_classes_resolve_without_remote_code(tmp_path):
    model = saved_classifier(tmp_path)
    config = AutoConfig.from_pretrained(tmp_path)
    assert config.model_type == "ttt_vit" and config.id2label[2] == "eel"
    base = AutoModel.from_pretrained(tmp_path).eval()
    assert type(base) is TTTViTModel
    x = torch.randn(1, 3, 8, 8)
    torch.testing.assert_close(base(x).pooler_output, model.ttt_vit(x).pooler_output, rtol=1e-6, atol=1e-6)
    assert type(AutoImageProcessor.from_pretrained(tmp_path)) is TTTViTImageProcessor
    auto_map = json.loads((tmp_path / "config.json").read_text())["auto_map"]
    assert auto_map == {
        "AutoConfig": "configuration_ttt_vit.TTTViTConfig",
        "AutoImageProcessor": "image_processing_ttt_vit.TTTViTImageProcessor",
        "AutoModel": "modeling_ttt_vit.TTTViTModel",
        "AutoModelForImageClassification": "modeling_ttt_vit.TTTViTForImageClassification",
    }


REMOTE_SCRIPT = HIDE_TTT_HF + textwrap.dedent(
    """
    import torch
    from PIL import Image
    from transformers import AutoModel, AutoModelForImageClassification, AutoImageProcessor, pipeline
    path = sys.argv[1]
    model = AutoModelForImageClassification.from_pretrained(path, trust_remote_code=True).eval()
    base = AutoModel.from_pretrained(path, trust_remote_code=True)
    processor = AutoImageProcessor.from_pretrained(path, trust_remote_code=True)
    x = torch.load(path + "/x.pt")
    classify = pipeline("image-classification", model=path, trust_remote_code=True)
    print(json.dumps({
        "model_module": type(model).__module__, "base_class": type(base).__name__,
        "processor_class": type(processor).__name__,
        "logits": model(x).logits.tolist(),
        "pipeline": classify(Image.new("RGB", (20, 13), (200, 30, 90)), top_k=1),
    }))
    """
)


def test_remote_code_loads_where_ttt_hf_cannot_be_imported(tmp_path):
    model = saved_classifier(tmp_path / "repo", mixer="ttt_mlp", inner_steps=2, inner_batching="shuffled")
    x = torch.randn(2, 3, 8, 8)
    torch.save(x, tmp_path / "repo" / "x.pt")
    for name in ("configuration_ttt_vit.py", "modeling_ttt_vit.py", "ttt_layers.py", "image_processing_ttt_vit.py"):
        assert (tmp_path / "repo" / name).exists(), name
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_HOME": str(tmp_path / "hf_home"), "PYTHONPATH": ""}
    result = subprocess.run(
        [sys.executable, "-c", REMOTE_SCRIPT, str(tmp_path / "repo")],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report["model_module"].startswith("transformers_modules.")
    assert (report["base_class"], report["processor_class"]) == ("TTTViTModel", "TTTViTImageProcessor")
    torch.testing.assert_close(torch.tensor(report["logits"]), model(x).logits, rtol=1e-6, atol=1e-6)
    assert report["pipeline"][0]["label"] in LABELS


# ----------------------------------------------------------------------------------- processor & pipeline


def photo(size=(40, 30), seed=0):
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8))


def test_processor_geometry_and_range():
    processor = TTTViTImageProcessor.for_image_size(224)
    assert processor.size == {"shortest_edge": 256} and processor.crop_size == {"height": 224, "width": 224}
    pixels = processor(photo((300, 200)), return_tensors="pt").pixel_values
    assert pixels.shape == (1, 3, 224, 224)
    assert pixels.min() >= -1 and pixels.max() <= 1 and pixels.min() < -0.9 and pixels.max() > 0.9
    white = processor(Image.new("RGB", (10, 10), (255, 255, 255)), return_tensors="pt").pixel_values
    black = processor(Image.new("RGB", (10, 10), (0, 0, 0)), return_tensors="pt").pixel_values
    assert torch.all(white == 1) and torch.all(black == -1)


def test_processor_converts_every_mode_to_the_models_channels():
    rgb = photo((16, 16))
    grey = TTTViTImageProcessor.for_image_size(16, num_channels=1)
    colour = TTTViTImageProcessor.for_image_size(16)
    for mode in ("L", "LA", "P", "RGB", "RGBA", "CMYK", "I", "1"):
        image = rgb.convert(mode)
        assert grey(image, return_tensors="pt").pixel_values.shape == (1, 1, 16, 16), mode
        assert colour(image, return_tensors="pt").pixel_values.shape == (1, 3, 16, 16), mode
    # transparency is composited onto white, not read as black
    clear = Image.new("RGBA", (16, 16), (0, 0, 0, 0))
    assert torch.all(colour(clear, return_tensors="pt").pixel_values == 1)
    # 16-bit grey keeps its scale
    deep = Image.fromarray(np.full((16, 16), 65535, dtype=np.uint16))
    assert torch.allclose(grey(deep, return_tensors="pt").pixel_values, torch.tensor(1.0))
    with pytest.raises(ValueError, match=r"Expected images with 1 channels .*\(3, 16, 16\)"):
        grey(np.zeros((16, 16, 3), dtype=np.uint8))
    with pytest.raises(ValueError, match="`num_channels` must be 1 or 3"):
        TTTViTImageProcessor(num_channels=4)


def test_processor_round_trip(tmp_path):
    processor = TTTViTImageProcessor.for_image_size(28, num_channels=1)
    processor.save_pretrained(tmp_path)
    tiny_config().save_pretrained(tmp_path)  # AutoImageProcessor takes the class from the model's config
    loaded = AutoImageProcessor.from_pretrained(tmp_path)
    assert type(loaded) is TTTViTImageProcessor and loaded.num_channels == 1
    image = photo((50, 35))
    torch.testing.assert_close(
        loaded(image, return_tensors="pt").pixel_values, processor(image, return_tensors="pt").pixel_values
    )


def test_pipeline_classifies_any_image(tmp_path):
    model = saved_classifier(tmp_path / "model")
    classify = pipeline("image-classification", model=str(tmp_path / "model"), trust_remote_code=False)
    rgb = photo((41, 27))
    rgb.save(tmp_path / "photo.png")
    processor = TTTViTImageProcessor.from_pretrained(tmp_path / "model")
    with torch.no_grad():
        probs = model(processor(rgb, return_tensors="pt").pixel_values).logits.softmax(-1)[0]
    best = classify(rgb)
    assert len(best) == 3 and best[0]["label"] == LABELS[int(probs.argmax())]
    assert best[0]["score"] == pytest.approx(float(probs.max()), abs=1e-5)
    top1 = classify(str(tmp_path / "photo.png"), top_k=1)
    assert top1 == [best[0]]
    images = [rgb.convert(mode) for mode in ("L", "LA", "P", "RGB", "RGBA", "CMYK")] + [photo((300, 9), seed=1)]
    results = classify(images, top_k=2)
    assert len(results) == 7 and all(len(r) == 2 and r[0]["score"] >= r[1]["score"] for r in results)
    assert results[3] == best[:2]


@pytest.mark.parametrize("soft", [False, True], ids=["class-labels", "soft-labels"])
def test_trainer_gradient_accumulation_matches_the_larger_batch(tmp_path, soft):
    """Two accumulated batches of 4 update the weights exactly as one batch of 8 (num_items_in_batch), for
    class indices and for class-probability labels (what mixup produces)."""
    from datasets import Dataset
    from transformers import Trainer, TrainingArguments

    g = torch.Generator().manual_seed(0)
    labels = torch.tensor([0, 1, 2, 0, 1, 2, 2, 2])
    if soft:
        labels = 0.8 * torch.nn.functional.one_hot(labels, 3) + 0.2 * torch.nn.functional.one_hot(labels.roll(1), 3)
    data = Dataset.from_dict(
        {"pixel_values": torch.randn(8, 3, 8, 8, generator=g).numpy(), "labels": labels.numpy()}
    ).with_format("torch")

    def train(batch, accumulation):
        torch.manual_seed(0)
        model = TTTViTForImageClassification(tiny_config(num_labels=3))
        torch.nn.init.normal_(model.classifier.weight, std=0.5)
        before = {k: v.clone() for k, v in model.state_dict().items()}
        args = TrainingArguments(
            output_dir=str(tmp_path / f"b{batch}"),
            per_device_train_batch_size=batch,
            gradient_accumulation_steps=accumulation,
            max_steps=1,
            learning_rate=0.1,
            optim="sgd",
            report_to=[],
            save_strategy="no",
            use_cpu=True,
            seed=0,
            data_seed=0,
            dataloader_drop_last=True,
        )
        Trainer(model=model, args=args, train_dataset=data).train()
        return before, model.state_dict()

    (before, full), (_, accumulated) = train(8, 1), train(4, 2)
    # the step moved the head far beyond the tolerance below (Trainer clips the gradient norm to 1: ~1e-3 here)
    assert (full["classifier.weight"] - before["classifier.weight"]).abs().max() > 1e-4
    assert (
        full["ttt_vit.layers.0.mixer.inner_init_0"] - before["ttt_vit.layers.0.mixer.inner_init_0"]
    ).abs().max() > 0
    for name in full:
        torch.testing.assert_close(accumulated[name], full[name], rtol=1e-5, atol=1e-6, msg=name)


def test_pipeline_needs_no_trust_remote_code_when_ttt_hf_is_installed(tmp_path):
    """With ttt_hf imported, pipeline(model=dir) must not ask whether to run the checkpoint's code (no tty here:
    a prompt would fail)."""
    saved_classifier(tmp_path / "model")
    saved = json.loads((tmp_path / "model" / "preprocessor_config.json").read_text())
    assert "auto_map" not in saved and "image_processor_type" not in saved
    script = (
        "import sys, ttt_hf; from PIL import Image; from transformers import pipeline; "
        "print(pipeline('image-classification', model=sys.argv[1])(Image.new('RGB', (9, 9)))[0]['label'])"
    )
    result = subprocess.run(
        [sys.executable, "-c", script, str(tmp_path / "model")],
        stdin=subprocess.DEVNULL,
        env={**os.environ, "HF_HUB_OFFLINE": "1"},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert "custom code" not in result.stdout + result.stderr  # no "Do you wish to run the custom code?" prompt
    assert result.stdout.strip().splitlines()[-1] in LABELS
