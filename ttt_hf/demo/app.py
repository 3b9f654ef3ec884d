"""`ttt-hf demo`: a Gradio app on the zoo's models, two tabs.

- Classify an image: upload, paste or draw one; two models side by side give their top-5 labels, and each TTT
  layer's inner reconstruction loss from W_0 to W_T on this very image: the training the model does at test time.
- Learn in context: a fresh task (projected images, permuted class names) on a base dataset's test images; a
  meta-trained learner's accuracy on queries as its labelled examples grow, next to SGD and 1-nearest-neighbour on
  the same inputs; the visitor can add drawn examples and ask the learner about a drawing.

Needs the `demo` extra (`pip install -e ".[demo]"`); nothing downloads at run time except Hub models named by id.
"""

import argparse
import logging
import os

from ..cli import is_user_error
from ..gpicl.evaluation import BASELINE_NAMES
from ..zoo.registry import SPACE_MODELS
from .classify import classify, inner_loss_figure, inner_loss_text
from .images import UploadError, read_upload, sample_dataset, sample_images, sketch_to_image
from .in_context import Examples, curve_figure, draw_examples, learning_curve, make_task
from .models import DemoModels, about, classifier, learner, resolve_models, trained_on

logger = logging.getLogger(__name__)
NONE = "(none)"
IN_CONTEXT_DATASETS = ("mnist-5k", "fashion-mnist")  # base datasets offered for tasks (digits' 8x8 is too coarse)
SOURCE_KEY = "ttt_hf_sample_dataset"  # in a PIL image's info: the dataset of the shipped sample it was read from
FIRST_PAIR = SPACE_MODELS[:2]  # shown first when offered: MTTT-MLP against linear attention, same setting


def _message(error: Exception) -> str:
    """What the page shows for a failed handler: the message of an error the visitor can fix (a bad upload, too many
    examples, a missing dataset: raised where inputs are checked, as the CLI tells them apart), else a generic line;
    the server's log gets the traceback."""
    if isinstance(error, UploadError) or is_user_error(error):
        return f"⚠️ {error}"
    logger.error("demo handler failed", exc_info=error)
    return f"⚠️ Something went wrong ({type(error).__name__}); the server's log has the details."


def _pair(names: list[str]) -> tuple[str, str]:
    """The two models the Classify tab opens with: FIRST_PAIR where offered (as zoo names or Hub ids)."""
    found = [next((n for n in names if n.split("/")[-1] == wanted), None) for wanted in FIRST_PAIR]
    if all(found):
        return found[0], found[1]
    return names[0], names[1] if len(names) > 1 else NONE


def _about(*names) -> str:
    return "\n\n".join(filter(None, (about(name) for name in names if name and name != NONE)))


def _prediction_text(name: str, labels: dict[str, float], source: str | None) -> str:
    """The model's answer in words; for a shipped sample of another dataset than the model's, a note saying so."""
    label, score = next(iter(labels.items()))
    text = f"**{name}** says **{label}** ({100 * score:.1f} %)"
    trained = trained_on(name)
    if source and trained and source != trained:
        text += f" — out of its scope: this is a {source} image, and it was trained on {trained}"
    return text


def classify_tab(gr, models: DemoModels):
    names = list(models.classifiers)
    first, second = _pair(names)
    image_state = gr.State(None)  # the last image classified (PIL), so that switching a model re-runs it
    with gr.Row():
        with gr.Column(scale=3):
            with gr.Tab("Upload or paste"):
                upload = gr.Image(type="filepath", sources=["upload", "clipboard"], label="your image",
                                  elem_id="classify-image", height=280)  # fmt: skip
                # hand our code the file as it came, so that a bad file gets our message rather than Gradio's failure
                upload.preprocess = lambda payload: None if payload is None else payload.path
                samples = sample_images()
                gr.Examples([[str(p)] for p in samples], inputs=upload, examples_per_page=len(samples),
                            label="samples: test images of " + ", ".join(dict.fromkeys(sample_dataset(p)
                                                                                       for p in samples)))  # fmt: skip
            with gr.Tab("Draw"):
                sketch = gr.Sketchpad(label="draw a digit or a garment", type="numpy", elem_id="classify-sketch",
                                      brush=gr.Brush(colors=["#000000"], color_mode="fixed", default_size=18),
                                      canvas_size=(280, 280))  # fmt: skip
                drawn = gr.Button("Classify the drawing", elem_id="classify-drawing")
        with gr.Column(scale=2):
            model_a = gr.Dropdown(names, value=first, label="model A", elem_id="model-a")
            model_b = gr.Dropdown([NONE, *names], value=second, label="model B (side by side)", elem_id="model-b")
            gr.Markdown(
                "Two models of one setting (MTTT-MLP against linear attention, say) show what the inner loop "
                "adds. Each answers for the images it was trained on:"
            )
            about_models = gr.Markdown(_about(first, second), elem_id="model-info")
    status = gr.Markdown(elem_id="classify-status")
    with gr.Row():
        with gr.Column():
            prediction_a = gr.Markdown(elem_id="prediction-a")
            label_a = gr.Label(num_top_classes=5, label="model A: top 5", elem_id="label-a")
        with gr.Column():
            prediction_b = gr.Markdown(elem_id="prediction-b")
            label_b = gr.Label(num_top_classes=5, label="model B: top 5", elem_id="label-b")
    losses = gr.Plot(label="test-time training on this image", elem_id="inner-losses")
    caption = gr.Markdown(elem_id="inner-caption")
    outputs = [status, prediction_a, label_a, prediction_b, label_b, losses, caption]

    def run(image, name_a, name_b):
        if image is None:
            return ["", "", None, "", None, None, ""]
        source = image.info.get(SOURCE_KEY)
        results = {}
        for name in (name_a, name_b):
            if name and name != NONE and name not in results:
                results[name] = classify(classifier(models.classifiers[name]), image)
        found = list(results.items())
        texts, labels = [_prediction_text(n, r.labels, source) for n, r in found], [r.labels for _, r in found]
        texts, labels = texts + [""] * (2 - len(texts)), labels + [None] * (2 - len(labels))
        caption_text = "\n\n".join(f"**{name}** — {inner_loss_text(result)}" for name, result in found)
        return ["", texts[0], labels[0], texts[1], labels[1], inner_loss_figure(results), caption_text]

    def guarded(read):
        def handler(value, name_a, name_b):
            image = None
            try:
                image = read(value)
                return [image, *run(image, name_a, name_b)]
            except Exception as error:  # noqa: BLE001  (shown in the page, never as a stack trace)
                return [image, _message(error), "", None, "", None, None, ""]  # an image read stays for a re-run

        return handler

    def read(path):
        image = None if path is None else read_upload(path)
        source = None if path is None else sample_dataset(path)
        if source:
            image.info[SOURCE_KEY] = source  # travels with the image, to the re-runs
        return image

    # one queue for everything that classifies: a model picked while an upload is still being classified runs after
    # it, on the new image, so the page never ends on the old model's answer or the old image
    serial = {"concurrency_id": "classify", "concurrency_limit": 1}
    upload.change(guarded(read), [upload, model_a, model_b], [image_state, *outputs], **serial)
    drawn.click(guarded(sketch_to_image), [sketch, model_a, model_b], [image_state, *outputs], **serial)
    for picker in (model_a, model_b):
        picker.change(guarded(lambda image: image), [image_state, model_a, model_b], [image_state, *outputs], **serial)
        picker.change(_about, [model_a, model_b], about_models)


def in_context_tab(gr, models: DemoModels):
    names = list(models.learners)
    shown_state = gr.State(None)  # what the last run showed: (learner name, Task, Examples)
    own_state = gr.State([])  # the visitor's drawn examples of the current task: [(PIL image, name)]
    gr.Markdown(
        "A **task** projects every image by a fresh random matrix and gives the classes a fresh order of names, so "
        "nothing about it was seen in meta-training. The learner reads the labelled examples and the query in one "
        "forward pass — no gradient step — and is compared with SGD and 1-nearest-neighbour on the same inputs."
    )
    with gr.Row():
        first = next((n for wanted in SPACE_MODELS for n in names if n.split("/")[-1] == wanted), names[0])
        learner_name = gr.Dropdown(names, value=first, label="learner", elem_id="learner")
        dataset = gr.Dropdown(list(IN_CONTEXT_DATASETS), value=IN_CONTEXT_DATASETS[0], label="base dataset (test "
                              "images)", elem_id="base-dataset")  # fmt: skip
        number = gr.Number(value=1, precision=0, minimum=0, maximum=10**6, label="task number", elem_id="task")
    with gr.Row():
        support = gr.Slider(1, 99, value=40, step=1, label="labelled examples", elem_id="support-count")
        queries = gr.Slider(5, 100, value=30, step=1, label="queries", elem_id="query-count")
    run_button = gr.Button("Learn this task", variant="primary", elem_id="run-in-context")
    gr.Markdown(
        "Each image keeps its look; its label is the name this task gives its class (a 5 may be called 8), "
        "and the learner must learn that naming from the examples."
    )
    summary = gr.Markdown(elem_id="in-context-summary")
    curve = gr.Plot(label="accuracy as the examples grow", elem_id="in-context-curve")
    with gr.Row():
        support_gallery = gr.Gallery(label="labelled examples (as the task names them)", columns=5, height=300,
                                     elem_id="support-gallery")  # fmt: skip
        query_gallery = gr.Gallery(label="queries: the learner's answer / the truth", columns=5, height=300,
                                   elem_id="query-gallery")  # fmt: skip
    with gr.Accordion("Teach it your own examples", open=False):
        with gr.Row():
            own_sketch = gr.Sketchpad(label="draw an example", type="numpy", elem_id="own-sketch",
                                      brush=gr.Brush(colors=["#000000"], color_mode="fixed", default_size=18),
                                      canvas_size=(280, 280))  # fmt: skip
            with gr.Column():
                own_label = gr.Dropdown([], label="its label (a name of this task)", elem_id="own-label")
                add = gr.Button("Add to the examples", elem_id="add-own")
                ask = gr.Button("Ask the learner about this drawing", elem_id="ask-own")
                clear = gr.Button("Forget my examples", elem_id="clear-own")
                own_status = gr.Markdown(elem_id="own-status")

    def learn(name, base, task_number, support_count, query_count, own):
        try:
            pipe = learner(models.learners[name])
            task = make_task(base, int(task_number or 0))
            examples = draw_examples(task, int(support_count), int(query_count))
            examples = Examples(examples.support + [image for image, _ in own],
                                examples.support_names + [label for _, label in own], examples.queries,
                                examples.query_names)  # fmt: skip
            result = learning_curve(pipe, examples, task)
        except Exception as error:  # noqa: BLE001
            return [_message(error), None, [], [], None, gr.update()]
        count = len(examples.support)
        words = {"learner": f"**{name}**", **{key: short for key, (short, _) in BASELINE_NAMES.items()}}
        scores = " · ".join(
            f"{words[key]} **{100 * values[-1]:.0f} %**" for key, values in result.accuracy.items()
        )  # fmt: skip
        text = (
            f"Task {task.number} on {base}: after {count} labelled examples"
            f"{f' ({len(own)} of them yours)' if own else ''}, accuracy on {len(examples.queries)} queries: {scores}. "
            "One task and few queries: differences of a few queries are noise."
        )
        title = f"{name}, task {task.number} of {base}"
        shown = list(zip(examples.support, examples.support_names))
        answers = result.predictions["learner"]
        asked = [(image, f"{said} / {truth} {'✓' if said == truth else '✗'}")
                 for image, said, truth in zip(examples.queries, answers, examples.query_names)]  # fmt: skip
        return [text, curve_figure(result, title), shown, asked, (name, task, examples), gr.update(choices=task.names)]

    inputs = [learner_name, dataset, number, support, queries, own_state]
    run_button.click(learn, inputs, [summary, curve, support_gallery, query_gallery, shown_state, own_label])

    def add_own(value, label, own):
        try:
            if not label:
                raise UploadError("Pick the drawing's label first (run a task to get its names).")
            own = [*own, (sketch_to_image(value), label)]
            return own, f"Added: {len(own)} of your examples. Run the task again to see them used."
        except Exception as error:  # noqa: BLE001
            return own, _message(error)

    def ask_own(value, shown):
        try:
            if shown is None:
                raise UploadError("Run a task first: the learner needs labelled examples.")
            name, task, examples = shown  # the learner and examples of the run on the page
            answers = learner(models.learners[name])(sketch_to_image(value), support=examples.support,
                                                     support_labels=examples.support_names, top_k=3,
                                                     projection_seed=task.projection_seed)  # fmt: skip
            said = ", ".join(f"{a['label']} ({100 * a['score']:.0f} %)" for a in answers)
            return f"After the {len(examples.support)} examples above, {name} says: {said}"
        except Exception as error:  # noqa: BLE001
            return _message(error)

    add.click(add_own, [own_sketch, own_label, own_state], [own_state, own_status])
    ask.click(ask_own, [own_sketch, shown_state], own_status)
    clear.click(lambda: ([], "Your examples are forgotten."), None, [own_state, own_status])

    def new_task(own):  # a drawing's label names a class of one task: another task or dataset starts afresh
        note = f"Your {len(own)} example(s) belonged to the previous task and are forgotten." if own else ""
        return [], note, gr.update(choices=[], value=None)

    for picker in (dataset, number):
        picker.change(new_task, own_state, [own_state, own_status, own_label])


def build_demo(models: DemoModels | list | None = None):
    """The Gradio app (not launched) on `models` (a `DemoModels`, or names/folders/Hub ids for `resolve_models`)."""
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")  # nothing leaves the machine
    try:
        import gradio as gr
    except ImportError as error:
        raise ImportError('`ttt-hf demo` needs Gradio: pip install -e ".[demo]" (or pip install gradio).') from error
    if not isinstance(models, DemoModels):
        models = resolve_models(models or ())
    with gr.Blocks(title="ttt-hf: test-time training, tried", analytics_enabled=False) as demo:
        gr.Markdown(
            "# ttt-hf: test-time training, tried\n"
            "Models of the ttt-hf zoo. **Classify an image** runs TTT-ViT classifiers: each attention layer is a "
            "small learner trained on the image's own tokens ([MTTT](https://arxiv.org/abs/2310.13807)). **Learn in "
            "context** runs general-purpose in-context learners ([GPICL](https://arxiv.org/abs/2212.04458)) that "
            "learn a new classification task from the examples in their input."
        )
        if models.classifiers:
            with gr.Tab("Classify an image", elem_id="tab-classify"):
                classify_tab(gr, models)
        if models.learners:
            with gr.Tab("Learn in context", elem_id="tab-in-context"):
                in_context_tab(gr, models)
    return demo


def argument_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="ttt-hf demo", description=__doc__.split("\n\nNeeds")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    parser.add_argument("--models", nargs="+", default=(), metavar="NAME",
                        help="zoo entries, run folders or Hub repo ids (default: every stored zoo entry)")  # fmt: skip
    parser.add_argument(
        "--host",
        default="127.0.0.1",
        help="address to serve on (default 127.0.0.1, this machine only; 0.0.0.0: every interface)",
    )
    parser.add_argument("--port", type=int, default=7860, help="port to serve on (default 7860)")
    return parser


def main(argv: list[str] | None = None):
    args = argument_parser().parse_args(argv)
    from transformers.utils import logging as transformers_logging

    transformers_logging.disable_progress_bar()  # no "Loading weights" bar per model in the server's output
    demo = build_demo(resolve_models(args.models))
    print(f"ttt-hf demo on http://{args.host}:{args.port} (Ctrl-C stops it)", flush=True)
    demo.launch(server_name=args.host, server_port=args.port, show_error=False, footer_links=["gradio"], quiet=True)


if __name__ == "__main__":
    main()
