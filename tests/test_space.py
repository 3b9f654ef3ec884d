"""The demo as a Hub Space: the folder `ttt-hf zoo space` writes, and `ttt-hf zoo publish --space` pushing it with
its models to the loopback Hub, whose Space checks it passes; then the pushed Space runs from a download of it, with
its own copy of ttt_hf, loading its models from that Hub."""

import json
import subprocess
import sys
from importlib import metadata

import pytest
from huggingface_hub import SpaceCard

from ttt_hf.hub.publish import HubPublishError, publish
from ttt_hf.hub.space import check_space_card, requirements, space_card, space_files, write_space
from ttt_hf.zoo.folders import publish_zoo, space_repo_ids
from ttt_hf.zoo.registry import SPACE_MODELS

MLP, LEARNER = "ttt-vit-mlp-fmnist-cpu", "gpicl-transformer-mnist-5k"


def test_the_space_folder_is_a_gradio_space_with_its_own_copy_of_ttt_hf(tmp_path):
    ids = space_repo_ids("someone")
    assert ids == [f"someone/{name}" for name in SPACE_MODELS]
    folder = write_space(tmp_path / "space", ids)
    card = SpaceCard.load(folder / "README.md")
    assert card.data.sdk == "gradio" and card.data.sdk_version == metadata.version("gradio")
    assert card.data.app_file == "app.py" and card.data.models == ids and card.data.license == "apache-2.0"
    app = (folder / "app.py").read_text()
    compile(app, "app.py", "exec")
    assert "from ttt_hf.demo.app import build_demo" in app and all(repr(i) in app for i in ids)
    wanted = requirements()
    assert (folder / "requirements.txt").read_text().split() == wanted
    assert {"mlxtend", "scikit-learn", "torch>=2.4"} <= set(wanted) and not any("gradio" in r for r in wanted)
    assert not any(r.startswith(("pytest", "selenium", "ruff")) for r in wanted)
    assert (folder / "packages.txt").read_text().split() == ["dataset-fashion-mnist"]
    shipped = ("ttt_hf/__init__.py", "ttt_hf/demo/app.py", "ttt_hf/modeling/modeling_ttt_vit.py",
               "ttt_hf/modeling/pipeline_gpicl.py", "ttt_hf/demo/samples/fashion-mnist__Ankle_boot.png")  # fmt: skip
    for module in shipped:
        assert (folder / module).is_file(), module
    assert not list(folder.rglob("__pycache__")) and not (folder / "ttt_hf" / "modeling" / "modeling").exists()
    with pytest.raises(FileExistsError, match="not empty"):
        write_space(folder, ids)
    with pytest.raises(FileNotFoundError, match="ttt-vit-mlp-fmnist-patch is not trained"):
        space_repo_ids("someone", ["ttt-vit-mlp-fmnist-patch"])
    with pytest.raises(ValueError, match="at least one model"):
        space_files([])


def test_the_space_card_rules_are_checked_offline():
    card = space_card(["a/b"])
    check_space_card(card)
    wrong = (("sdk", "flask", "sdk must be"), ("colorFrom", "teal", "colorFrom must be one of"),
             ("short_description", "x" * 61, "over 60"), ("models", ["b"], "repo ids"))  # fmt: skip
    for field, value, words in wrong:
        bad = space_card(["a/b"])
        setattr(bad.data, field, value)
        with pytest.raises(ValueError, match=words):
            check_space_card(SpaceCard(str(bad)))


@pytest.mark.slow
def test_zoo_publish_pushes_the_space_with_its_models_and_the_space_runs_from_the_hub(hub_server, tmp_path):
    user = hub_server.user
    results = publish_zoo(user, [MLP, LEARNER], space="ttt-hf-demo")
    assert [r.repo_id for r in results] == [f"{user}/{MLP}", f"{user}/{LEARNER}", f"{user}/ttt-hf-demo"]
    files = hub_server.files(f"spaces/{user}/ttt-hf-demo")
    assert {"app.py", "README.md", "requirements.txt", "packages.txt", ".ttt-hf.json"} <= set(files)
    assert SpaceCard(files["README.md"].decode()).data.models == [f"{user}/{MLP}", f"{user}/{LEARNER}"]
    assert hub_server.server_errors == [] and hub_server.unhandled == []
    # the server's Space checks: a Space whose models are not on the Hub is refused, and says why
    lonely = write_space(tmp_path / "lonely", [f"{user}/not-published"])
    with pytest.raises(HubPublishError, match="This Space would not build: the card's model .*not-published"):
        publish(lonely, f"{user}/lonely-demo", repo_type="space")
    # publishing again is safe (the same path as the models'): nothing changed, so no new commit
    again = publish_zoo(user, [MLP, LEARNER], space="ttt-hf-demo")[-1]
    assert again.commit == results[-1].commit and len(hub_server.commits(f"spaces/{user}/ttt-hf-demo")) == 2

    # the Space as the Hub would run it: its files downloaded, its own ttt_hf, its models from the (loopback) Hub
    from huggingface_hub import snapshot_download

    local = snapshot_download(f"{user}/ttt-hf-demo", repo_type="space", local_dir=tmp_path / "space")
    code = f"""
import json, ttt_hf, app
assert ttt_hf.__file__.startswith({str(local)!r}), ttt_hf.__file__
demo = app.demo
upload = next(b for b in demo.blocks.values() if getattr(b, "elem_id", None) == "classify-image")
handler = next(fn for fn in demo.fns.values() if upload._id in [t[0] for t in fn.targets])
image, status, text, labels, *_ = handler.fn("ttt_hf/demo/samples/fashion-mnist__Ankle_boot.png", {f"{user}/{MLP}"!r},
                                             "(none)")
print(json.dumps({{"status": status, "text": text, "labels": labels}}))
"""
    env = hub_server.env(tmp_path / "hf_home", token=None)
    run = subprocess.run([sys.executable, "-c", code], cwd=local, env=env, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, (run.stdout + run.stderr)[-4000:]
    answer = json.loads(run.stdout.strip().splitlines()[-1])
    assert answer["status"] == "" and answer["text"].startswith(f"**{user}/{MLP}** says **Ankle boot**")
    assert next(iter(answer["labels"])) == "Ankle boot"


def test_a_bad_space_name_stops_zoo_publish_before_any_model_goes_up(hub_server):
    with pytest.raises(ValueError, match="invalid repo id"):
        publish_zoo(hub_server.user, [MLP], space="my demo")
    with pytest.raises(ValueError, match="also a model's name"):
        publish_zoo(hub_server.user, [MLP], space=MLP)
    assert hub_server.repos == {} and hub_server.requests_to("/api/repos/create") == []
