"""The Hub-protocol test server (tests/hub_server.py) driven by the real huggingface_hub client and transformers."""

import base64
import hashlib
import json
import textwrap
import time
from pathlib import Path

import httpx2
import pytest
import torch
from huggingface_hub import CommitOperationAdd, CommitOperationDelete, HfApi
from huggingface_hub.errors import (
    EntryNotFoundError,
    HfHubHTTPError,
    RepositoryNotFoundError,
    RevisionNotFoundError,
)
from safetensors.torch import save_file

from ttt_hf import TTTViTForImageClassification

from .conftest import tiny_config
from .hub_server import HubServer, lfs_pointer, no_retry_sleep

CARD = "---\nlicense: apache-2.0\nlibrary_name: transformers\ntags:\n- vision\n---\n# A test model\n"


def make_folder(path):
    """A repo folder: weights (LFS by name), a config (.json), remote code (.py), a card, a nested file."""
    path.mkdir(parents=True, exist_ok=True)
    save_file({"w": torch.arange(64, dtype=torch.float32), "b": torch.ones(3)}, path / "model.safetensors")
    (path / "config.json").write_text(json.dumps({"model_type": "ttt_vit", "architectures": ["X"]}))
    (path / "modeling_x.py").write_text("X = 1\n")
    (path / "README.md").write_text(CARD)
    (path / "plots").mkdir(exist_ok=True)
    (path / "plots" / "notes.txt").write_text("nested\n")
    return {p.relative_to(path).as_posix(): p.read_bytes() for p in path.rglob("*") if p.is_file()}


def assert_clean(hub):
    assert hub.server_errors == [], hub.server_errors[0]
    assert hub.unhandled == []


def test_create_repo_conflict_exist_ok_and_refusals(hub_server):
    api = HfApi()
    url = api.create_repo("tester/alpha")
    assert url.repo_id == "tester/alpha" and url.startswith(hub_server.endpoint)
    with pytest.raises(HfHubHTTPError) as err:
        api.create_repo("tester/alpha")
    assert err.value.response.status_code == 409
    assert api.create_repo("tester/alpha", exist_ok=True).repo_id == "tester/alpha"
    assert [c.title for c in hub_server.commits("tester/alpha")] == ["initial commit"]  # still one repo, untouched
    assert api.list_repo_files("tester/alpha") == [".gitattributes"]
    assert api.whoami()["name"] == "tester"

    with pytest.raises(HfHubHTTPError, match="rights to create") as err:
        api.create_repo("someone-else/beta")
    assert err.value.response.status_code == 403
    with pytest.raises(HfHubHTTPError, match="only hosts model and Space repos"):
        api.create_repo("tester/data", repo_type="dataset")
    bad = httpx2.post(f"{hub_server.endpoint}/api/repos/create", json={"name": "_bad", "type": "model"},
                      headers={"Authorization": f"Bearer {hub_server.token}"})  # fmt: skip
    assert bad.status_code == 400 and "Invalid repo name" in bad.json()["error"]
    assert sorted(hub_server.repos) == ["tester/alpha"]
    assert_clean(hub_server)


def test_upload_folder_goes_through_lfs_and_model_info_by_revision(hub_server, tmp_path):
    api = HfApi()
    api.create_repo("tester/model")
    local = make_folder(tmp_path / "run")
    info = api.upload_folder(repo_id="tester/model", folder_path=tmp_path / "run", commit_message="first")
    assert info.oid == hub_server.head("tester/model") and len(info.oid) == 40

    # the weights went through the LFS batch API and a PUT of their bytes; git stores a pointer
    oid = hashlib.sha256(local["model.safetensors"]).hexdigest()
    assert hub_server.lfs_puts == [oid]
    assert hub_server.requests_to(r"^/tester/model\.git/info/lfs/objects/batch$", "POST")
    assert hub_server.requests_to(r"/xet-", None) == []
    entries = hub_server.file_entries("tester/model")
    assert entries["model.safetensors"].lfs_oid == oid
    assert hub_server.stored_blob("tester/model", "model.safetensors") == lfs_pointer(oid, len(local[
        "model.safetensors"]))  # fmt: skip
    for name in ("config.json", "modeling_x.py", "README.md", "plots/notes.txt"):
        assert not entries[name].is_lfs and hub_server.stored_blob("tester/model", name) == local[name]
    assert {k: v for k, v in hub_server.files("tester/model").items() if k != ".gitattributes"} == local

    # model_info at the commit and at main, with file metadata and the card's metadata
    model = api.model_info("tester/model", revision=info.oid, files_metadata=True)
    assert model.sha == info.oid and model.private is False
    siblings = {s.rfilename: s for s in model.siblings}
    assert siblings["model.safetensors"].lfs.sha256 == oid and siblings["model.safetensors"].size == len(
        local["model.safetensors"])  # fmt: skip
    assert siblings["config.json"].lfs is None and siblings["config.json"].size == len(local["config.json"])
    assert model.card_data.license == "apache-2.0" and model.library_name == "transformers"
    assert model.safetensors.total == 67
    first_commit = hub_server.commits("tester/model")[-1].oid
    assert api.model_info("tester/model", revision=first_commit).siblings[0].rfilename == ".gitattributes"
    assert len(api.model_info("tester/model", revision=first_commit).siblings) == 1
    with pytest.raises(RevisionNotFoundError):
        api.model_info("tester/model", revision="no-such-branch")

    # listing
    assert sorted(api.list_repo_files("tester/model")) == sorted([".gitattributes", *local])
    top = {e.path: type(e).__name__ for e in api.list_repo_tree("tester/model")}
    assert top["plots"] == "RepoFolder" and "plots/notes.txt" not in top
    assert [e.path for e in api.list_repo_tree("tester/model", path_in_repo="plots")] == ["plots/notes.txt"]
    (weights,) = api.get_paths_info("tester/model", ["model.safetensors", "missing.bin"])
    assert weights.lfs.sha256 == oid
    assert api.file_exists("tester/model", "config.json") and not api.file_exists("tester/model", "nope.json")

    # the same folder again: the client sees the remote oids and commits nothing, uploads nothing
    again = api.upload_folder(repo_id="tester/model", folder_path=tmp_path / "run", commit_message="again")
    assert again.oid == info.oid and hub_server.lfs_puts == [oid]
    assert_clean(hub_server)


def test_downloads_in_a_fresh_process_and_history_after_a_deletion(hub_server, tmp_path):
    api = HfApi()
    api.create_repo("tester/hist")
    local = make_folder(tmp_path / "run")
    first = api.upload_folder(repo_id="tester/hist", folder_path=tmp_path / "run", commit_message="first").oid
    second = api.create_commit(
        "tester/hist",
        [CommitOperationDelete("config.json"), CommitOperationAdd("extra.txt", b"later\n")],
        commit_message="drop the config",
    ).oid
    assert second != first and "config.json" not in hub_server.files("tester/hist")
    assert hub_server.files("tester/hist", first)["config.json"] == local["config.json"]

    script = textwrap.dedent(
        f"""
        import hashlib, json, os
        from huggingface_hub import hf_hub_download, snapshot_download
        from huggingface_hub.errors import EntryNotFoundError
        out = {{}}
        for name in {sorted(local)!r}:
            path = hf_hub_download("tester/hist", name, revision={first!r})
            out[name] = hashlib.sha256(open(path, "rb").read()).hexdigest()
        try:
            hf_hub_download("tester/hist", "config.json")
            out["deleted"] = "still there"
        except EntryNotFoundError:
            out["deleted"] = "gone"
        snap = snapshot_download("tester/hist")
        out["main"] = sorted(os.path.relpath(os.path.join(d, f), snap).replace(os.sep, "/")
                             for d, _, fs in os.walk(snap) for f in fs)
        print(json.dumps(out))
        """
    )
    hf_home = tmp_path / "hf_home"
    result = hub_server.python(script, hf_home)
    out = json.loads(result.stdout.strip().splitlines()[-1])
    assert {k: out[k] for k in local} == {k: hashlib.sha256(v).hexdigest() for k, v in local.items()}
    assert out["deleted"] == "gone"
    assert out["main"] == sorted([".gitattributes", "extra.txt", *(k for k in local if k != "config.json")])
    # the LFS file came from the "CDN" (another origin, as the Hub's), and the client did not send it the token
    cdn = [r for r in hub_server.requests if r.path.startswith("/lfs/") and r.method == "GET"]
    assert cdn and not any(r.authorization for r in cdn)

    # offline, from that cache: no request reaches the server
    before = len(hub_server.requests)
    offline = hub_server.python(
        "from huggingface_hub import hf_hub_download\n"
        f"print(open(hf_hub_download('tester/hist', 'model.safetensors', revision={first!r}), 'rb').read()[:8])\n"
        "print(open(hf_hub_download('tester/hist', 'extra.txt'), 'rb').read())",
        hf_home,
        offline=True,
    )
    assert "later" in offline.stdout and len(hub_server.requests) == before
    assert_clean(hub_server)


def test_private_repo_needs_the_right_token(hub_server, tmp_path):
    api = HfApi()
    api.create_repo("tester/secret", private=True)
    make_folder(tmp_path / "run")
    api.upload_folder(repo_id="tester/secret", folder_path=tmp_path / "run")
    assert api.model_info("tester/secret").private is True
    assert "model.safetensors" in api.list_repo_files("tester/secret")
    other = hub_server.api(token=hub_server.add_user("mallory"))
    for client in (hub_server.api(token=None), other):
        with pytest.raises(RepositoryNotFoundError):
            client.model_info("tester/secret")
        with pytest.raises(RepositoryNotFoundError):
            client.list_repo_files("tester/secret")
    with pytest.raises(HfHubHTTPError, match="Invalid credentials") as err:
        hub_server.api(token="hf_wrong_token").model_info("tester/secret")
    assert err.value.response.status_code == 401

    script = "from huggingface_hub import hf_hub_download\nprint(hf_hub_download('tester/secret', 'config.json'))"
    for token in (None, "hf_wrong_token"):
        result = hub_server.python(script, tmp_path / f"home_{token}", token=token, check=False)
        assert result.returncode != 0
        assert ("RepositoryNotFoundError" if token is None else "Invalid credentials") in result.stderr
        assert hub_server.token not in result.stdout + result.stderr
    hub_server.python(script, tmp_path / "home_ok")
    assert_clean(hub_server)


def test_missing_or_wrong_token_cannot_create_or_write(hub_server, tmp_path):
    make_folder(tmp_path / "run")
    hub_server.create_repo("tester/public")
    head = hub_server.head("tester/public")
    mallory = hub_server.add_user("mallory")
    for token, status in ((None, 401), ("hf_wrong_token", 401), (mallory, 403)):
        api = hub_server.api(token=token)
        with pytest.raises(HfHubHTTPError) as err:
            api.create_repo("tester/new", exist_ok=True)
        assert err.value.response.status_code == status
        with pytest.raises(HfHubHTTPError) as err:
            api.upload_folder(repo_id="tester/public", folder_path=tmp_path / "run")
        assert err.value.response.status_code == status
        with pytest.raises(HfHubHTTPError):
            api.create_commit("tester/public", [CommitOperationDelete(".gitattributes")], commit_message="x")
    assert sorted(hub_server.repos) == ["tester/public"]
    assert hub_server.head("tester/public") == head and hub_server.lfs_puts == []
    assert_clean(hub_server)


def test_injected_500_on_commit_fails_the_upload_and_leaves_the_repo(hub_server, tmp_path):
    api = HfApi()
    api.create_repo("tester/faulty")
    make_folder(tmp_path / "run")
    head = hub_server.head("tester/faulty")
    fault = hub_server.fail(r"^/api/models/tester/faulty/commit/", status=500, method="POST")
    with pytest.raises(HfHubHTTPError) as err:
        api.upload_folder(repo_id="tester/faulty", folder_path=tmp_path / "run")
    assert err.value.response.status_code == 500 and fault.hits == 1
    assert hub_server.head("tester/faulty") == head
    assert sorted(hub_server.files("tester/faulty")) == [".gitattributes"]
    # the fault is spent: the same call now succeeds
    assert api.upload_folder(repo_id="tester/faulty", folder_path=tmp_path / "run").oid != head
    assert_clean(hub_server)


def test_dropped_connection_during_lfs_put_fails_the_upload_and_leaves_the_repo(hub_server, tmp_path, monkeypatch):
    no_retry_sleep(monkeypatch)  # the client retries a dropped PUT 5 times, sleeping 23 s in all
    api = HfApi()
    api.create_repo("tester/dropped")
    local = make_folder(tmp_path / "run")
    head = hub_server.head("tester/dropped")
    fault = hub_server.drop(r"^/lfs-upload/", times=None, method="PUT")
    with pytest.raises(RuntimeError, match="model.safetensors") as err:
        api.upload_folder(repo_id="tester/dropped", folder_path=tmp_path / "run")
    assert isinstance(err.value.__cause__, httpx2.TransportError)  # the connection was cut, no HTTP answer
    assert fault.hits == 6  # one try and five retries, never a false success
    assert hub_server.head("tester/dropped") == head and hub_server.lfs_puts == []
    assert hub_server.requests_to(r"/commit/") == []

    # one dropped PUT: the client's retry succeeds, and the repo has the exact bytes
    hub_server.clear_faults()
    once = hub_server.drop(r"^/lfs-upload/", times=1, method="PUT")
    api.upload_folder(repo_id="tester/dropped", folder_path=tmp_path / "run")
    assert once.hits == 1 and hub_server.files("tester/dropped")["model.safetensors"] == local["model.safetensors"]
    assert_clean(hub_server)


def test_invalid_card_metadata_is_refused_before_any_upload(hub_server, tmp_path):
    api = HfApi()
    api.create_repo("tester/card")
    make_folder(tmp_path / "run")
    (tmp_path / "run" / "README.md").write_text("---\nmodel-index:\n- name: x\n  results:\n  - task: {}\n---\nhi\n")
    with pytest.raises(ValueError, match="Invalid metadata in README.md"):
        api.upload_folder(repo_id="tester/card", folder_path=tmp_path / "run")
    assert hub_server.lfs_puts == [] and len(hub_server.commits("tester/card")) == 1
    assert_clean(hub_server)


@pytest.mark.parametrize(
    "metadata, problem",
    [
        ("pipeline_tag: in-context-classification", '"pipeline_tag" must be one of the Hub\'s tasks'),
        ("license: apache 2", '"license" must be one of the Hub\'s license identifiers'),
        ("datasets:\n- scikit-learn digits", '"datasets" must hold Hub dataset ids'),
    ],
)
def test_card_values_the_hub_would_flag_are_refused_at_commit_too(hub_server, metadata, problem):
    """What the Hub's metadata check refuses: unknown tasks and licences, dataset names that are no ids; also on a
    plain commit of README.md (which the client does not validate first)."""
    api = HfApi()
    api.create_repo("tester/values")
    card = f"---\nlicense: mit\n{metadata}\n---\nhi\n"
    with pytest.raises(ValueError, match="Invalid metadata in README.md") as refused:  # the client asks validate-yaml
        api.upload_file(path_or_fileobj=card.encode(), path_in_repo="README.md", repo_id="tester/values")
    assert problem in str(refused.value.__cause__)
    encoded = base64.b64encode(card.encode()).decode()
    lines = [{"key": "header", "value": {"summary": "card"}},
             {"key": "file", "value": {"path": "README.md", "content": encoded}}]  # fmt: skip
    direct = httpx2.post(f"{hub_server.endpoint}/api/models/tester/values/commit/main",
                         content="\n".join(json.dumps(line) for line in lines),
                         headers={"authorization": f"Bearer {hub_server.token}"})  # fmt: skip
    assert direct.status_code == 400 and problem in direct.json()["error"]  # a commit that skips the client check
    assert len(hub_server.commits("tester/values")) == 1  # nothing committed
    fine = "---\nlicense: apache-2.0\npipeline_tag: other\ndatasets:\n- ylecun/mnist\n---\nhi\n"
    api.upload_file(path_or_fileobj=fine.encode(), path_in_repo="README.md", repo_id="tester/values")
    assert hub_server.files("tester/values")["README.md"] == fine.encode()


def test_pull_requests_and_branches(hub_server, tmp_path):
    api = HfApi()
    api.create_repo("tester/pr")
    make_folder(tmp_path / "run")
    main = hub_server.head("tester/pr")
    pr = api.upload_folder(repo_id="tester/pr", folder_path=tmp_path / "run", create_pr=True)
    assert pr.pr_revision == "refs/pr/1" and hub_server.head("tester/pr") == main
    assert hub_server.head("tester/pr", "refs/pr/1") == pr.oid
    assert "config.json" in api.list_repo_files("tester/pr", revision="refs/pr/1")

    api.create_branch("tester/pr", branch="v1")
    with pytest.raises(HfHubHTTPError) as err:
        api.create_branch("tester/pr", branch="v1")
    assert err.value.response.status_code == 409
    on_branch = api.upload_file(path_or_fileobj=b"x", path_in_repo="x.txt", repo_id="tester/pr", revision="v1")
    assert hub_server.head("tester/pr", "v1") == on_branch.oid and hub_server.head("tester/pr") == main
    api.create_tag("tester/pr", tag="first", revision=on_branch.oid)
    refs = api.list_repo_refs("tester/pr", include_pull_requests=True)
    assert {b.name for b in refs.branches} == {"main", "v1"} and refs.tags[0].target_commit == on_branch.oid
    assert [c.title for c in api.list_repo_commits("tester/pr", revision="v1")][-1] == "initial commit"
    with pytest.raises(EntryNotFoundError):
        api.create_commit("tester/pr", [CommitOperationDelete("missing.txt")], commit_message="x")
    assert_clean(hub_server)


@pytest.mark.slow
def test_transformers_from_pretrained_in_a_fresh_process_then_offline(hub_server, tmp_path):
    model = TTTViTForImageClassification(tiny_config(num_labels=3)).eval()
    model.save_pretrained(tmp_path / "model")
    pixels = torch.linspace(-1, 1, 3 * 8 * 8).reshape(1, 3, 8, 8)
    with torch.no_grad():
        expected = model(pixel_values=pixels).logits.tolist()
    api = HfApi()
    api.create_repo("tester/tiny-ttt")
    commit = api.upload_folder(repo_id="tester/tiny-ttt", folder_path=tmp_path / "model").oid
    assert hub_server.file_entries("tester/tiny-ttt")["model.safetensors"].is_lfs

    script = textwrap.dedent(
        """
        import json, torch, ttt_hf
        from transformers import AutoModelForImageClassification
        model = AutoModelForImageClassification.from_pretrained("tester/tiny-ttt").eval()
        pixels = torch.linspace(-1, 1, 3 * 8 * 8).reshape(1, 3, 8, 8)
        with torch.no_grad():
            print(json.dumps(model(pixel_values=pixels).logits.tolist()))
        """
    )
    hf_home = tmp_path / "hf_home"
    online = hub_server.python(script, hf_home)
    assert json.loads(online.stdout.strip().splitlines()[-1]) == expected
    assert (hf_home / "hub" / "models--tester--tiny-ttt" / "snapshots" / commit).is_dir()
    before = len(hub_server.requests)
    offline = hub_server.python(script, hf_home, offline=True)
    assert json.loads(offline.stdout.strip().splitlines()[-1]) == expected and len(hub_server.requests) == before
    assert_clean(hub_server)


def test_server_stops_by_itself_when_idle():
    server = HubServer(idle_timeout=0.2).start()
    deadline = time.monotonic() + 10
    while not server.closed and time.monotonic() < deadline:
        time.sleep(0.1)
    assert server.closed
    server.close()  # idempotent


def test_spaces_live_beside_models_and_a_space_that_could_not_start_is_refused(hub_server, tmp_path):
    api = hub_server.api()
    with pytest.raises(ValueError, match="space_sdk"):  # the client insists first; the server too (below)
        api.create_repo("tester/demo", repo_type="space")
    response = httpx2.post(f"{hub_server.endpoint}/api/repos/create", json={"name": "demo", "type": "space"},
                           headers={"Authorization": f"Bearer {hub_server.token}"})  # fmt: skip
    assert response.status_code == 400 and "needs an sdk" in response.text
    api.create_repo("tester/demo")  # a model and a Space of the same id are two repos
    url = api.create_repo("tester/demo", repo_type="space", space_sdk="gradio")
    assert url.repo_type == "space" and url.repo_id == "tester/demo"
    card = "---\nsdk: gradio\napp_file: app.py\nmodels:\n- tester/demo\n---\n"
    (tmp_path / "README.md").write_text(card)
    with pytest.raises(HfHubHTTPError, match="would not build: app_file 'app.py' is not in the Space"):
        api.upload_file(path_or_fileobj=str(tmp_path / "README.md"), path_in_repo="README.md", repo_id="tester/demo",
                        repo_type="space")  # fmt: skip
    (tmp_path / "app.py").write_text("print('hello')\n")
    (tmp_path / "weights.safetensors").write_bytes(b"\0" * 2048)  # through LFS, on the Space's own path
    api.upload_folder(folder_path=str(tmp_path), repo_id="tester/demo", repo_type="space")
    assert set(hub_server.files("spaces/tester/demo")) == {
        ".gitattributes",
        "README.md",
        "app.py",
        "weights.safetensors",
    }
    assert set(hub_server.files("tester/demo")) == {".gitattributes"}  # the model is untouched
    assert api.space_info("tester/demo").sdk == "gradio"
    local = api.hf_hub_download("tester/demo", "app.py", repo_type="space", cache_dir=tmp_path / "cache")
    assert Path(local).read_text() == "print('hello')\n"
    bad = "---\nsdk: flask\ncolorFrom: teal\nmodels:\n- tester/absent\n---\n"
    (tmp_path / "README.md").write_text(bad)
    with pytest.raises(ValueError, match="Invalid metadata in README.md") as refused:  # the client asks validate-yaml
        api.upload_file(path_or_fileobj=str(tmp_path / "README.md"), path_in_repo="README.md", repo_id="tester/demo",
                        repo_type="space")  # fmt: skip
    assert '"sdk" must be one of' in str(refused.value) and '"colorFrom" must be one of' in str(refused.value)
    api.delete_repo("tester/demo", repo_type="space")
    assert "spaces/tester/demo" not in hub_server.repos and "tester/demo" in hub_server.repos
