"""pipeline("image-classification") gives processor + model's answer for 16-bit grey and RGBA images, with ttt_hf
and as remote code; other models' pipelines stay the stock ones."""

import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch
from PIL import Image
from transformers import (
    AutoImageProcessor,
    AutoModelForImageClassification,
    ImageClassificationPipeline,
    ViTConfig,
    ViTForImageClassification,
    ViTImageProcessorPil,
    pipeline,
)
from transformers.image_utils import load_image

from ttt_hf import TTTViTForImageClassification, TTTViTImageClassificationPipeline, TTTViTImageProcessor
from ttt_hf.modeling.image_processing_ttt_vit import convert_image_mode

from .conftest import HIDE_TTT_HF, tiny_config

LABELS = ["cat", "dog", "eel"]


def save_classifier(path):
    config = tiny_config(num_labels=3, id2label=dict(enumerate(LABELS)), label2id={n: i for i, n in enumerate(LABELS)})
    model = TTTViTForImageClassification(config)
    torch.nn.init.normal_(model.classifier.weight, std=2.0)  # the head starts at zero: all logits equal
    model.save_pretrained(path)
    return path


def save_images(folder):
    """A 16-bit grey PNG with values up to 65000 and an RGBA PNG whose transparent half hides saturated colours."""
    rng = np.random.default_rng(0)
    deep = (np.linspace(0, 65000, 20 * 14).reshape(14, 20) + rng.integers(0, 400, (14, 20))).astype(np.uint16)
    Image.fromarray(deep).save(folder / "deep.png")
    rgba = np.concatenate([rng.integers(0, 256, (14, 20, 3)), np.full((14, 20, 1), 255)], axis=-1).astype(np.uint8)
    rgba[:, 10:, :3] = (230, 20, 200)  # colour under the transparent half
    rgba[:, 10:, 3] = 0
    rgba[3:6, 2:5, 3] = 90  # and a half-transparent patch
    Image.fromarray(rgba, "RGBA").save(folder / "clear.png")
    paths = {"deep": str(folder / "deep.png"), "clear": str(folder / "clear.png")}
    assert Image.open(paths["deep"]).mode == "I;16" and np.asarray(Image.open(paths["deep"])).max() > 255
    assert Image.open(paths["clear"]).mode == "RGBA"
    return paths


def scores(result):
    return {entry["label"]: entry["score"] for entry in result}


def direct(processor, model, image):
    """processor + model, as pipeline reports it: label -> softmax score."""
    with torch.no_grad():
        probs = model(**processor(image, return_tensors="pt")).logits.softmax(-1)[0]
    return {model.config.id2label[i]: float(p) for i, p in enumerate(probs)}


def assert_same(got, expected, atol=1e-6):
    assert got.keys() == expected.keys()
    for label in got:
        assert got[label] == pytest.approx(expected[label], abs=atol), label


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    folder = tmp_path_factory.mktemp("pipeline_modes")
    return save_classifier(folder / "model"), save_images(folder)


def test_pipeline_matches_processor_and_model_for_16_bit_and_rgba(saved):
    path, images = saved
    classify = pipeline("image-classification", model=str(path))  # no trust_remote_code: ttt_hf is imported
    assert type(classify) is TTTViTImageClassificationPipeline
    processor = AutoImageProcessor.from_pretrained(path)
    model = AutoModelForImageClassification.from_pretrained(path).eval()
    stock = ImageClassificationPipeline(model=model, image_processor=processor)  # what pipeline() gave before
    for name, file in images.items():
        image = Image.open(file)
        expected = direct(processor, model, image)
        assert_same(scores(classify(file)), expected)
        assert_same(scores(classify(image)), expected)
        assert_same(scores(classify([file, image])[1]), expected)
        assert classify(file, top_k=1)[0]["label"] == max(expected, key=expected.get)
        # without the fix, load_image's .convert("RGB") comes first: 16-bit grey saturates, alpha is dropped
        old = scores(stock(file))
        assert_same(old, direct(processor, model, load_image(file)))
        assert max(abs(old[label] - expected[label]) for label in LABELS) > 1e-3, name
    # what the processor sees in each case: a mid-grey 16-bit pixel and a transparent pixel
    deep, clear = Image.open(images["deep"]), Image.open(images["clear"])
    assert np.asarray(load_image(images["deep"]))[7, 10, 0] == 255 != np.asarray(deep)[7, 10] // 257
    assert tuple(np.asarray(load_image(images["clear"]))[0, 15]) == (230, 20, 200)
    assert torch.all(processor(clear.crop((10, 0, 20, 14)), return_tensors="pt").pixel_values == 1)  # white


def test_saved_folder_carries_the_pipeline(saved):
    path, _ = saved
    assert (path / "pipeline_ttt_vit.py").exists()
    assert "custom_pipelines" not in json.loads((path / "config.json").read_text())
    assert AutoModelForImageClassification.from_pretrained(path).config.custom_pipelines == {}


def test_other_models_keep_the_stock_pipeline(tmp_path, saved):
    _, images = saved
    config = ViTConfig(
        image_size=8,
        patch_size=4,
        hidden_size=12,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=16,
        num_labels=3,
        id2label=dict(enumerate(LABELS)),
        label2id={n: i for i, n in enumerate(LABELS)},
    )
    model = ViTForImageClassification(config).eval()
    torch.nn.init.normal_(model.classifier.weight, std=2.0)
    model.save_pretrained(tmp_path)
    processor = ViTImageProcessorPil(size={"height": 8, "width": 8})
    processor.save_pretrained(tmp_path)
    classify = pipeline("image-classification", model=str(tmp_path))
    assert type(classify) is ImageClassificationPipeline
    assert (
        type(TTTViTImageClassificationPipeline(model=model, image_processor=processor)) is ImageClassificationPipeline
    )
    stock = pipeline("image-classification", model=str(tmp_path), pipeline_class=ImageClassificationPipeline)
    for file in images.values():
        got = scores(classify(file))
        assert got == scores(stock(file))
        assert_same(got, direct(processor, model, load_image(file)))  # converted to RGB first, as always
        kept = direct(processor, model, convert_image_mode(Image.open(file), "RGB"))  # what TTT-ViT's path sees
        assert max(abs(got[label] - kept[label]) for label in LABELS) > 1e-3
    classify.save_pretrained(tmp_path / "resaved")
    assert "custom_pipelines" not in json.loads((tmp_path / "resaved" / "config.json").read_text())
    assert not (tmp_path / "resaved" / "pipeline_ttt_vit.py").exists()


REMOTE_SCRIPT = HIDE_TTT_HF + textwrap.dedent(
    """
    import torch
    from PIL import Image
    from transformers import AutoImageProcessor, AutoModelForImageClassification, pipeline
    path, files = sys.argv[1], json.loads(sys.argv[2])
    model = AutoModelForImageClassification.from_pretrained(path, trust_remote_code=True).eval()
    processor = AutoImageProcessor.from_pretrained(path, trust_remote_code=True)
    classify = pipeline("image-classification", model=path, trust_remote_code=True)
    report = {"pipeline_class": type(classify).__module__ + "." + type(classify).__name__, "cases": {}}
    for name, file in files.items():
        with torch.no_grad():
            probs = model(**processor(Image.open(file), return_tensors="pt")).logits.softmax(-1)[0]
        report["cases"][name] = {
            "direct": {model.config.id2label[i]: float(p) for i, p in enumerate(probs)},
            "path": classify(file), "pil": classify(Image.open(file)),
        }
    print(json.dumps(report))
    """
)


def test_remote_code_pipeline_matches_processor_and_model(tmp_path, saved):
    path, images = saved
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_HOME": str(tmp_path / "hf_home"), "PYTHONPATH": ""}
    result = subprocess.run(
        [sys.executable, "-c", REMOTE_SCRIPT, str(path), json.dumps(images)],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        stdin=subprocess.DEVNULL,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report["pipeline_class"].startswith("transformers_modules.")
    assert report["pipeline_class"].endswith("pipeline_ttt_vit.TTTViTImageClassificationPipeline")
    model = AutoModelForImageClassification.from_pretrained(path).eval()
    processor = TTTViTImageProcessor.from_pretrained(path)
    for name, case in report["cases"].items():
        assert_same(case["direct"], direct(processor, model, Image.open(images[name])))
        assert_same(scores(case["path"]), case["direct"])
        assert_same(scores(case["pil"]), case["direct"])
