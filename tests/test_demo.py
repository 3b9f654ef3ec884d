"""`ttt-hf demo`: what its tabs compute (against the pipelines and the evaluation's baselines), how it refuses bad
input, and the page itself driven in headless Chromium (tests/test_demo_browser.py)."""

import io
import zlib

import numpy as np
import pytest
import torch
from PIL import Image

from ttt_hf.demo import images
from ttt_hf.demo.classify import classify, inner_loss_figure, inner_loss_text
from ttt_hf.demo.images import UploadError, read_upload, sample_images, sketch_to_image
from ttt_hf.demo.in_context import Examples, curve_points, draw_examples, learning_curve, make_task
from ttt_hf.demo.models import about, classifier, learner, resolve_models
from ttt_hf.gpicl.evaluation import nearest_neighbour_predict, sgd_predict
from ttt_hf.zoo.registry import folder, is_trained

MLP, LINATTN, LEARNER = "ttt-vit-mlp-fmnist-cpu", "ttt-vit-linattn-fmnist-cpu", "gpicl-transformer-mnist-5k"


def stored(*names):
    missing = [name for name in names if not is_trained(name)]
    if missing:  # the zoo's folders are committed: this only fires in a checkout without them
        pytest.fail(f"zoo entries missing from model_cards/: {missing}")
    return [str(folder(name)) for name in names]


# ---------------------------------------------------------------- uploads and drawings
def write(path, data: bytes):
    path.write_bytes(data)
    return path


def png_bytes(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


@pytest.mark.parametrize(
    "name, data, words",
    [
        ("empty.png", b"", r"is empty \(0 bytes\)"),
        ("paper.png", b"%PDF-1.7\n1 0 obj << >>\nendobj\n", "is not an image: it is a PDF document"),
        ("page.jpg", b"<!DOCTYPE html><html></html>", "it is an HTML page"),
        ("noise.png", bytes(range(256)) * 4, "is not an image PIL can read"),
    ],
)
def test_files_that_are_not_images_get_a_message_that_names_them(tmp_path, name, data, words):
    with pytest.raises(UploadError, match=words) as raised:
        read_upload(write(tmp_path / name, data))
    assert str(raised.value).startswith(name)


def test_a_truncated_image_is_called_damaged(tmp_path):
    data = png_bytes(Image.fromarray(np.random.default_rng(0).integers(0, 255, (64, 64), dtype=np.uint8)))
    with pytest.raises(UploadError, match="damaged or cut short"):
        read_upload(write(tmp_path / "cut.png", data[: len(data) // 2]))


def test_huge_files_and_images_are_refused_before_decoding(tmp_path, monkeypatch):
    path = write(tmp_path / "big.png", png_bytes(Image.new("L", (300, 200))))
    monkeypatch.setattr(images, "MAX_UPLOAD_BYTES", 100)
    with pytest.raises(UploadError, match=r"big.png is 0 MiB; the demo takes files up to 0 MiB"):
        read_upload(path)
    monkeypatch.setattr(images, "MAX_UPLOAD_BYTES", 2**20)
    monkeypatch.setattr(images, "MAX_PIXELS", 300 * 200 - 1)
    with pytest.raises(UploadError, match=r"300×200 pixels, more than the demo takes"):
        read_upload(path)
    # a PNG that declares 100,000 x 100,000 pixels in a few hundred bytes: refused from its header
    header = b"\x89PNG\r\n\x1a\n"
    ihdr = (100_000).to_bytes(4, "big") * 2 + bytes([8, 0, 0, 0, 0])
    chunk = lambda kind, body: len(body).to_bytes(4, "big") + kind + body + zlib.crc32(kind + body).to_bytes(4, "big")
    bomb = write(tmp_path / "bomb.png", header + chunk(b"IHDR", ihdr) + chunk(b"IEND", b""))
    monkeypatch.undo()
    with pytest.raises(UploadError, match="bomb.png declares more pixels than any image the demo takes"):
        read_upload(bomb)


def test_no_upload_and_an_empty_drawing_ask_for_an_image():
    with pytest.raises(UploadError, match="No image yet"):
        read_upload(None)
    blank = np.zeros((100, 100, 4), dtype=np.uint8)  # a transparent canvas
    for value in (None, {"composite": None}, {"composite": blank}):
        with pytest.raises(UploadError, match="Nothing drawn yet"):
            sketch_to_image(value)


def test_an_image_keeps_its_mode_for_the_pipeline(tmp_path):
    """16-bit grey must reach the image processor as such (the pipeline converts it, not a blind RGB)."""
    pixels = (np.arange(64 * 64).reshape(64, 64) * 16).astype(np.uint16)
    path = tmp_path / "deep.png"
    Image.fromarray(pixels).save(path)
    image = read_upload(path)
    assert image.mode.startswith("I") and np.array_equal(np.asarray(image), pixels)


def test_a_drawing_becomes_a_light_stroke_on_black_centred_in_a_square():
    canvas = np.zeros((200, 300, 4), dtype=np.uint8)  # transparent, strokes drawn in black
    canvas[40:100, 200:220] = (0, 0, 0, 255)  # a bar 60 tall, 20 wide, off-centre
    image = sketch_to_image({"composite": canvas, "layers": [], "background": None})
    pixels = np.asarray(image)
    assert image.mode == "L" and pixels.shape == (100, 100)  # 60 / (1 - 2 * 0.2) = 100
    rows, cols = np.nonzero(pixels > 128)
    assert (rows.min(), rows.max() + 1, cols.min(), cols.max() + 1) == (20, 80, 40, 60)  # centred
    assert pixels[rows, cols].min() == 255 and pixels[:20].max() == 0
    opaque = np.full((200, 300, 4), 255, dtype=np.uint8)  # a white opaque canvas: the same drawing
    opaque[40:100, 200:220, :3] = 0
    assert np.array_equal(np.asarray(sketch_to_image({"composite": opaque})), pixels)


def test_the_shipped_samples_are_the_test_images_they_are_named_after(tmp_path):
    written = images.write_samples(tmp_path)
    assert [p.name for p in sorted(written)] == [p.name for p in sample_images()] and len(written) == 12
    for path in written:
        assert np.array_equal(np.asarray(Image.open(path)), np.asarray(Image.open(images.SAMPLES / path.name)))
    assert [p.name for p in sample_images("fashion-mnist")][0] == "fashion-mnist__Ankle_boot.png"


# ---------------------------------------------------------------- the Classify tab
def test_classify_gives_the_pipelines_top_labels_and_the_inner_losses_of_its_forward_pass():
    mlp, linattn = stored(MLP, LINATTN)
    image = read_upload(sample_images("fashion-mnist")[0])
    pipe = classifier(mlp)
    result = classify(pipe, image)
    answers = pipe(image, top_k=5)
    assert result.labels == {a["label"]: a["score"] for a in answers} and next(iter(result.labels)) == "Ankle boot"
    model, processor = pipe.model, pipe.image_processor
    with torch.no_grad():
        outputs = model(**processor(image, return_tensors="pt"), output_inner_losses=True)
    assert torch.allclose(outputs.logits.softmax(-1).max(), torch.tensor(max(result.labels.values())), atol=1e-6)
    config = model.config
    assert len(result.inner_losses) == config.num_hidden_layers
    assert all(len(losses) == config.inner_steps + 1 and losses[-1] < losses[0] for losses in result.inner_losses)
    expected = [layer[0].mean(0).tolist() for layer in outputs.inner_losses]
    assert np.allclose(result.inner_losses, expected)
    assert result.mixer == "MTTT-MLP (T=1)" and "fell by" in inner_loss_text(result)
    other = classify(classifier(linattn), image)
    assert other.inner_losses == [] and "no inner loop" in inner_loss_text(other)
    figure = inner_loss_figure({MLP: result, LINATTN: other})
    assert len(figure.axes) == 2 and len(figure.axes[0].lines) == config.num_hidden_layers


# ---------------------------------------------------------------- the Learn-in-context tab
def test_a_task_permutes_the_class_names_and_draws_distinct_test_images():
    task = make_task("mnist-5k", 3)
    assert sorted(task.names) == [str(d) for d in range(10)] and task.names != sorted(task.names)
    assert make_task("mnist-5k", 3) == task and make_task("mnist-5k", 4).names != task.names
    examples = draw_examples(task, 20, 10)
    pixels = {np.asarray(image).tobytes() for image in examples.support + examples.queries}
    assert len(pixels) == 30 and len(examples.support_names) == 20 and len(examples.query_names) == 10
    with pytest.raises(ValueError, match="test split has 500 images"):
        draw_examples(task, 400, 101)
    assert curve_points(25) == [1, 2, 3, 5, 10, 20, 25] and curve_points(99)[-1] == 99


def test_the_learning_curve_reads_the_learner_as_the_pipeline_does_and_the_baselines_on_its_inputs():
    (source,) = stored(LEARNER)
    pipe = learner(source)
    task = make_task("mnist-5k", 7)
    examples = draw_examples(task, 30, 12)
    curve = learning_curve(pipe, examples, task)
    assert curve.k == [1, 2, 3, 5, 10, 20, 30]
    answers = pipe(examples.queries, support=examples.support, support_labels=examples.support_names,
                   projection_seed=task.projection_seed)  # fmt: skip
    assert curve.predictions["learner"] == [a[0]["label"] for a in answers]
    hits = np.mean([a[0]["label"] == truth for a, truth in zip(answers, examples.query_names)])
    assert curve.accuracy["learner"][-1] == pytest.approx(hits)
    encoded = pipe.encode(examples.queries, examples.support, examples.support_names, task.projection_seed)
    x, y = encoded["support"].expand(12, -1, -1), encoded["labels"].expand(12, -1)
    classes = encoded["classes"]
    for name, predict in (("sgd", sgd_predict), ("nearest_neighbour", nearest_neighbour_predict)):
        said = [classes[i] for i in predict(x, y, encoded["queries"], len(classes)).tolist()]
        assert curve.predictions[name] == said
    # after one example, every learner can only name that example's class
    assert len({curve.accuracy[name][0] for name in curve.accuracy}) == 1
    assert curve.accuracy["learner"][0] == np.mean([n == examples.support_names[0] for n in examples.query_names])
    with pytest.raises(ValueError, match="No labelled examples"):
        learning_curve(pipe, Examples([], [], examples.queries, examples.query_names), task)


def test_encode_is_what_the_pipeline_feeds_the_learner():
    (source,) = stored(LEARNER)
    pipe = learner(source)
    rng = np.random.default_rng(0)
    support = [rng.integers(0, 255, (28, 28), dtype=np.uint8) for _ in range(6)]
    labels = ["b", "a", "b", "c", "a", "c"]
    query = rng.integers(0, 255, (28, 28), dtype=np.uint8)
    encoded = pipe.encode([query], support, labels, projection_seed=5)
    fed = pipe.preprocess(query, context=pipe._context(support, labels, 5, None))
    assert torch.equal(fed["inputs"][0, :-1], encoded["support"]) and torch.equal(
        fed["inputs"][0, -1], encoded["queries"][0]
    )
    assert encoded["classes"] == ["b", "a", "c"] and encoded["labels"].tolist() == [0, 1, 0, 2, 1, 2]


# ---------------------------------------------------------------- models and the app
def test_models_resolve_to_stored_folders_and_bad_names_say_what_to_do(tmp_path):
    models = resolve_models([MLP, LEARNER])
    assert models.classifiers == {MLP: str(folder(MLP))} and models.learners == {LEARNER: str(folder(LEARNER))}
    everything = resolve_models()
    assert MLP in everything.classifiers and LEARNER in everything.learners
    assert about(MLP) == (f"**{MLP}**: MTTT-MLP (T=1), trained on Fashion-MNIST; it expects one garment or shoe, "
                          "light on a black background and centred, as in Fashion-MNIST.")  # fmt: skip
    assert about(f"org/{LEARNER}").startswith(f"**org/{LEARNER}**: GPICL, transformer backbone") and about("a/b") == ""
    with pytest.raises(ValueError, match="neither a zoo entry"):
        resolve_models(["no-such-model"])
    with pytest.raises(FileNotFoundError, match="ttt-hf zoo train ttt-vit-mlp-fmnist-patch"):
        resolve_models(["ttt-vit-mlp-fmnist-patch"], model_cards=tmp_path)
    with pytest.raises(ValueError, match="No models to show"):
        resolve_models(model_cards=tmp_path)


def test_without_gradio_the_demo_says_which_extra_to_install(monkeypatch):
    from ttt_hf.demo import app

    monkeypatch.setitem(__import__("sys").modules, "gradio", None)
    with pytest.raises(ImportError, match=r'pip install -e "\.\[demo\]"'):
        app.build_demo([MLP])


def handler(demo, elem_id: str, event: str | None = None):
    """The function Gradio calls for `event` (default: the first) on the block with `elem_id`."""
    block = next(b for b in demo.blocks.values() if getattr(b, "elem_id", None) == elem_id)
    return next(fn.fn for fn in demo.fns.values()
                if any(t[0] == block._id and event in (None, t[1]) for t in fn.targets))  # fmt: skip


def stroke():
    """A drawing as the sketchpad hands it over: a black bar on a transparent canvas."""
    canvas = np.zeros((280, 280, 4), dtype=np.uint8)
    canvas[60:220, 130:150] = (0, 0, 0, 255)
    return {"background": None, "layers": [canvas], "composite": canvas}


@pytest.fixture(scope="module")
def demo():
    pytest.importorskip("gradio")
    from ttt_hf.demo import app

    return app.build_demo([MLP, LINATTN, LEARNER])


def test_the_app_has_both_tabs_and_each_classify_path_answers_in_the_page(demo, tmp_path):
    ids = {block.elem_id for block in demo.blocks.values() if getattr(block, "elem_id", None)}
    assert {"tab-classify", "tab-in-context", "classify-image", "model-a", "model-b", "prediction-a",
            "inner-losses", "run-in-context", "in-context-summary", "own-sketch", "model-info"} <= ids  # fmt: skip
    upload = handler(demo, "classify-image")
    state, status, *rest = upload(str(write(tmp_path / "x.png", b"%PDF-1.4")), MLP, LINATTN)
    assert state is None and status.startswith("⚠️ x.png is not an image: it is a PDF document")
    state, status, text_a, label_a, text_b, *_ = upload(str(sample_images("fashion-mnist")[0]), MLP, LINATTN)
    assert status == "" and text_a.startswith(f"**{MLP}** says **Ankle boot**") and LINATTN in text_b
    # a shipped digit on a Fashion-MNIST model: the answer says it is out of the model's scope
    digit = upload(str(sample_images("mnist-5k")[0]), MLP, LINATTN)
    assert "out of its scope: this is a mnist-5k image, and it was trained on fashion-mnist" in digit[2]
    assert "out of its scope" in handler(demo, "model-b", "change")(digit[0], MLP, "(none)")[2]
    # switching model B to none re-runs the image kept in the state
    again = handler(demo, "model-b", "change")(state, MLP, "(none)")
    assert again[2] == text_a and again[4] == "" and again[5] is None
    # a drawing: a vertical bar reads as a trouser to a Fashion-MNIST model
    drawn = handler(demo, "classify-drawing")(stroke(), MLP, LINATTN)
    assert drawn[0].mode == "L" and drawn[1] == "" and "says" in drawn[2]
    empty = handler(demo, "classify-drawing")({"composite": None}, MLP, LINATTN)
    assert empty[1].startswith("⚠️ Nothing drawn yet")


def test_the_in_context_handlers_keep_a_visitors_examples_to_their_task(demo):
    learn = handler(demo, "run-in-context")
    add, ask = handler(demo, "add-own"), handler(demo, "ask-own")
    text, figure, support, queries, shown, labels = learn(LEARNER, "mnist-5k", 1, 20, 10, [])
    assert text.startswith("Task 1 on mnist-5k: after 20 labelled examples, accuracy on 10 queries:") and figure
    name, task, examples = shown
    assert name == LEARNER and labels["choices"] == task.names and len(support) == 20 and len(queries) == 10
    assert [caption for _, caption in support] == examples.support_names
    own, note = add(stroke(), None, [])
    assert own == [] and note.startswith("⚠️ Pick the drawing's label first")
    own, note = add(stroke(), task.names[0], [])
    assert len(own) == 1 and own[0][1] == task.names[0] and note.startswith("Added: 1 of your examples")
    text, *_, shown, _ = learn(LEARNER, "mnist-5k", 1, 20, 10, own)
    assert "after 21 labelled examples (1 of them yours)" in text
    assert shown[2].support_names[-1] == task.names[0] and shown[2].support[-1] is own[0][0]
    answer = ask(stroke(), shown)
    assert answer.startswith(f"After the 21 examples above, {LEARNER} says: ")
    assert ask(stroke(), None).startswith("⚠️ Run a task first")
    # another task or dataset: the visitor's examples (named in the old task's names) are dropped, and the labels too
    cleared, message, label_update = handler(demo, "task", "change")(own)
    assert cleared == [] and "belonged to the previous task" in message
    assert label_update["choices"] == [] and label_update["value"] is None
    assert handler(demo, "base-dataset", "change")([])[:2] == ([], "")
    too_many = learn(LEARNER, "mnist-5k", 1, 99, 450, [])
    assert too_many[0] == "⚠️ mnist-5k's test split has 500 images: ask for at most 500 in all."


def test_errors_the_visitor_did_not_cause_get_a_generic_message():
    from ttt_hf.demo.app import _message

    assert _message(UploadError("x.png is empty")) == "⚠️ x.png is empty"
    try:
        np.zeros(2).reshape(3)
    except ValueError as error:  # a ValueError from deep inside a library: not the visitor's
        assert _message(error) == "⚠️ Something went wrong (ValueError); the server's log has the details."
    assert _message(RuntimeError("boom")).startswith("⚠️ Something went wrong (RuntimeError)")


@pytest.mark.parametrize("mode", ["RGBA", "CMYK", "P", "I;16", "LA", "1"])
def test_any_image_mode_is_classified_as_the_pipeline_classifies_it(demo, tmp_path, mode):
    """Modes a visitor's files come in: the upload keeps them, the pipeline's processor converts them."""
    boot = Image.open(sample_images("fashion-mnist")[0]).resize((56, 56))
    image = boot.convert("I;16") if mode == "I;16" else boot.convert("RGB").convert(mode)
    if mode == "I;16":
        image = Image.fromarray(np.asarray(boot, dtype=np.uint16) * 257)
    path = tmp_path / f"boot.{'jpg' if mode == 'CMYK' else 'png'}"
    image.save(path)
    state, status, text, labels, *_ = handler(demo, "classify-image")(str(path), MLP, "(none)")
    expected = classifier(str(folder(MLP)))(read_upload(path), top_k=5)
    assert status == "" and state.mode == Image.open(path).mode
    assert labels == {a["label"]: a["score"] for a in expected}
