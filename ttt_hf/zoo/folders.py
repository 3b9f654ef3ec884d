"""A zoo folder (model_cards/<name>/): the fixed test slice that checks its weights, `store` (a finished run in),
its sample image and card, publishing the folders (with a collection), and their inference speed."""

import json
import shutil
from pathlib import Path

from ..common.run_files import RESULTS_FILE, TRAINING_ARGS_FILE, recorded_seed
from .registry import MAX_FOLDER_BYTES, SLICE_SIZE, SPACE_MODELS, ZOO, ZooEntry, folder, get_entry, is_trained

# ------------------------------------------------------------------------------------------ the test slice


def fixed_test_slice(arguments: dict):
    """(images, labels, description) of the fixed test slice of a run, from its training_args.json: the first
    SLICE_SIZE images of the test split that `ttt-hf train` drew (same dataset, fractions and split seed)."""
    from ..common.data import load_image_dataset

    data = arguments.get("data") or {}
    split = load_image_dataset(
        data["dataset"],
        data_dir=data.get("data_dir"),
        validation_fraction=data.get("validation_fraction", 0.1),
        seed=data.get("split_seed", 0),
        max_train_samples=data.get("max_train_samples"),
        max_eval_samples=data.get("max_eval_samples"),
        check_images=False,
    )["test"]
    rows = split.select(range(min(SLICE_SIZE, len(split))))
    description = (
        f"the first {len(rows)} of the {len(split)} images of the test split of "
        f"load_image_dataset({data['dataset']!r}, validation_fraction={data.get('validation_fraction', 0.1)}, "
        f"seed={data.get('split_seed', 0)})"
    )
    return list(rows["image"]), list(rows["label"]), description


def check_run_is_the_entry(run: Path, entry: ZooEntry) -> None:
    """ValueError unless `run` was made by the entry's kind of command, on its dataset, with its config overrides
    and seed (and, for a learner, its backbone)."""
    from ..common.arguments import parse_overrides

    config = json.loads((run / "config.json").read_text())
    if (config.get("model_type") == "gpicl") != entry.in_context:
        raise ValueError(f"{run} is not a `ttt-hf {entry.trainer}` run, which zoo entry {entry.name} needs.")
    if entry.in_context:
        meta = json.loads((run / RESULTS_FILE).read_text())["meta_arguments"]
        found, wanted = (config["backbone"], meta["dataset"]), (entry.mixer, entry.dataset)
    else:
        found = json.loads((run / TRAINING_ARGS_FILE).read_text())["data"]["dataset"]
        wanted = entry.dataset
    overrides = parse_overrides(entry.overrides)
    seed = recorded_seed(run)
    found, wanted = (found, {k: config.get(k) for k in overrides}, seed), (wanted, overrides, entry.seed)
    if found != wanted:
        raise ValueError(f"{run} was trained as {found}; zoo entry {entry.name} is {wanted}.")


def in_context_slice(folder) -> tuple[float, int, str]:
    """(accuracy, sequences, description) of an in-context learner's test slice: its run's final evaluation on
    unseen tasks of the meta-training dataset, recomputed from the weights in `folder`. ValueError if the weights do
    not reproduce the recorded accuracy (to one sequence in a thousand: a near tie may flip across machines)."""
    from ..gpicl.meta_training import reproduce_final_accuracy

    task_set, found, recorded = reproduce_final_accuracy(folder)
    size = json.loads((Path(folder) / RESULTS_FILE).read_text())["meta_arguments"]["final_eval_sequences"]
    if abs(found - recorded) > 1e-3 + 1e-9:
        raise ValueError(f"{folder}: the weights give {found:.4f} on {task_set}, all_results.json records {recorded}.")
    return found, size, f"the final evaluation's {size} sequences of {task_set} (test split), after the last example"


def predictions(model_dir, images, batch_size: int = 50) -> list[int]:
    """Top-1 class indices of `images` by the model and image processor saved in `model_dir` (Auto classes)."""
    import torch
    from transformers import AutoImageProcessor, AutoModelForImageClassification

    model = AutoModelForImageClassification.from_pretrained(model_dir).eval()
    processor = AutoImageProcessor.from_pretrained(model_dir)
    found = []
    with torch.no_grad():
        for start in range(0, len(images), batch_size):
            pixels = processor(images[start : start + batch_size], return_tensors="pt")["pixel_values"]
            found += model(pixel_values=pixels).logits.argmax(-1).tolist()
    return found


def accuracy(found: list[int], labels: list[int]) -> float:
    return sum(int(a == b) for a, b in zip(found, labels, strict=True)) / len(labels)


# ------------------------------------------------------------------------------------------------ commands


def store(name: str, run_dir, model_cards=None, org: str | None = None) -> Path:
    """Copy a finished run into model_cards/<name>/: the files a publish uploads except the model code, with
    all_results.json extended by the test slice's accuracy, and README.md, the card (`ttt_hf.hub.vit_card`)."""
    from ..common.run_files import CARD_FILE
    from ..hub.publish import repo_files

    get_entry(name)
    run, target = Path(run_dir), folder(name, model_cards)
    repo_id = f"{org}/{name}" if org else name
    files = repo_files(run, repo_id, provenance=False)  # checks the run is complete and its card valid
    check_run_is_the_entry(run, get_entry(name))
    if get_entry(name).in_context:
        slice_accuracy, size, description = in_context_slice(run)
    else:
        images, labels, description = fixed_test_slice(json.loads((run / TRAINING_ARGS_FILE).read_text()))
        slice_accuracy, size = accuracy(predictions(run, images), labels), len(labels)
    if target.exists():
        shutil.rmtree(target)
    target.mkdir(parents=True)
    for path_in_repo, source in files.items():
        if path_in_repo.endswith(".py") or path_in_repo == CARD_FILE:
            continue
        (target / path_in_repo).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(source, target / path_in_repo)
    results = json.loads((target / RESULTS_FILE).read_text())
    results.update(test_slice=description, test_slice_size=size, test_slice_accuracy=slice_accuracy)
    if not get_entry(name).in_context:
        results["sample"] = sample_of(target, images[0], labels[0])
    (target / RESULTS_FILE).write_text(json.dumps(results, indent=4, sort_keys=True) + "\n")
    (target / CARD_FILE).write_bytes(repo_files(target, repo_id, provenance=False)[CARD_FILE])
    size = sum(p.stat().st_size for p in target.rglob("*") if p.is_file())
    if size > MAX_FOLDER_BYTES:
        raise ValueError(f"{target} holds {size / 2**20:.1f} MB, over the zoo's 5 MB: use a smaller model.")
    return target


def sample_of(target: Path, image, label: int) -> dict:
    """Write the first image of the test slice as the folder's sample image (`write_sample`), with its record."""
    from ..vision.evaluation import write_sample

    names = json.loads((target / "config.json").read_text())["id2label"]
    return write_sample(target, image, names[str(label)])


def refresh_cards(model_cards=None, names=()) -> list[Path]:
    """Rewrite the card of every stored entry (or of `names`) from its files (after a change to the card's template
    or to its results), adding the sample image of classifiers stored before it existed. The weights and measured
    numbers stay as they are."""
    from huggingface_hub import ModelCard

    from ..common.run_files import CARD_FILE
    from ..hub.publish import repo_files

    refreshed = []
    for name in ZOO:
        if not is_trained(name, model_cards) or (names and name not in names):
            continue
        target = folder(name, model_cards)
        results = json.loads((target / RESULTS_FILE).read_text())
        if not get_entry(name).in_context and "sample" not in results:
            images, labels, _ = fixed_test_slice(json.loads((target / TRAINING_ARGS_FILE).read_text()))
            results["sample"] = sample_of(target, images[0], labels[0])
            (target / RESULTS_FILE).write_text(json.dumps(results, indent=4, sort_keys=True) + "\n")
        card = ModelCard.load(target / CARD_FILE)
        repo_id = usage_repo_id(card.text) or name
        (target / CARD_FILE).write_bytes(repo_files(target, repo_id, provenance=False)[CARD_FILE])
        refreshed.append(target)
    return refreshed


def usage_repo_id(card_text: str) -> str | None:
    """The repo id a card's usage example loads (`model="..."`), or None."""
    import re

    match = re.search(r'model="([^"]+)"', card_text)
    return match.group(1) if match else None


def trained_entries(names=(), default=(), model_cards=None) -> list[str]:
    """`names` (or `default`), each checked to be a zoo entry trained here."""
    names = list(names) or list(default)
    for name in names:
        get_entry(name)
        if not is_trained(name, model_cards):
            raise FileNotFoundError(f"{name} is not trained: {folder(name, model_cards)} has no {RESULTS_FILE}.")
    return names


def space_repo_ids(org: str, names=(), model_cards=None) -> list[str]:
    """The Hub ids the demo's Space loads: ORG/<name> for `names` (default SPACE_MODELS), each trained here."""
    return [f"{org}/{name}" for name in trained_entries(names, SPACE_MODELS, model_cards)]


def publish_zoo(org: str, names=(), dry_run=None, model_cards=None, tag=None, collection=None, space=None) -> list:
    """Publish each trained entry (all of them, or `names`; with `space`, default SPACE_MODELS) from
    model_cards/<name>/ to ORG/<name>, each commit tagged `tag` if given; with `collection`, gather them into ORG's
    collection of that title afterwards; with `space`, then publish the demo's Space on those models as ORG/<space>
    (repo type space; its folder is written and checked before any model goes up). With `dry_run`, write each into
    DIR/<name> (the collection into DIR/collection.json, the Space into DIR/<space>) instead."""
    import tempfile

    from ..hub.publish import add_to_collection, check_repo_id, publish
    from ..hub.space import write_space

    default = SPACE_MODELS if space else [name for name in ZOO if is_trained(name, model_cards)]
    names = trained_entries(names, default, model_cards)
    with tempfile.TemporaryDirectory() as scratch:
        if space is not None:
            check_repo_id(f"{org}/{space}")
            if space in names:
                raise ValueError(f"--space {space!r} is also a model's name: give the Space another name.")
            space_folder = write_space(Path(scratch) / space, [f"{org}/{name}" for name in names])
        published = [
            publish(folder(name, model_cards), f"{org}/{name}", tag=tag,
                    dry_run=None if dry_run is None else Path(dry_run) / name)
            for name in names
        ]  # fmt: skip
        if collection is not None:
            repo_ids = [result.repo_id for result in published]
            if dry_run is not None:
                listing = {"title": collection, "namespace": org, "items": repo_ids}
                (Path(dry_run) / "collection.json").write_text(json.dumps(listing, indent=2) + "\n")
            else:
                url = add_to_collection(collection, org, repo_ids, description=COLLECTION_DESCRIPTION)
                print(f"collection {collection!r}: {url}")
        if space is not None:
            target = None if dry_run is None else Path(dry_run) / space
            published.append(publish(space_folder, f"{org}/{space}", tag=tag, dry_run=target, repo_type="space"))
    return published


COLLECTION_DESCRIPTION = "TTT-ViT classifiers and GPICL in-context learners trained with ttt-hf, cards with results"


def measure_speed(model_cards=None, batch_size: int = 256, repeats: int = 5, names=()) -> dict[str, float]:
    """Inference images/s of every trained classifier (or of `names`) on this machine (eval mode, no grad, one batch
    of random images at the model's size; median of `repeats` after a warm-up), written into its all_results.json with
    the machine, so that the results table compares models measured on one machine."""
    import torch
    from transformers import AutoModelForImageClassification

    from ..bench.measure import machine_description, time_call

    speeds = {}
    for name, entry in ZOO.items():
        if not is_trained(name, model_cards) or entry.in_context or (names and name not in names):
            continue
        target = folder(name, model_cards)
        model = AutoModelForImageClassification.from_pretrained(target).eval()
        config = model.config
        pixels = torch.randn(batch_size, config.num_channels, config.image_size, config.image_size)
        with torch.no_grad():
            seconds = time_call(lambda m=model, x=pixels: m(pixel_values=x), "cpu", repeats, warmup=2)
        speeds[name] = batch_size / seconds
        results = json.loads((target / RESULTS_FILE).read_text())
        results.update(inference_images_per_s=speeds[name], inference_batch_size=batch_size,
                       inference_machine=machine_description("cpu"))  # fmt: skip
        (target / RESULTS_FILE).write_text(json.dumps(results, indent=4, sort_keys=True) + "\n")
    refresh_cards(model_cards, names=list(speeds))  # the cards quote the speed
    return speeds
