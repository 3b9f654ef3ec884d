"""Publish a training run to the Hugging Face Hub: `ttt-hf publish RUN_DIR REPO_ID` (`publish()`).

What goes up, in one commit (`repo_files`, the single list a dry run writes and a publish uploads):
- the weights: model.safetensors (or the shards its `model.safetensors.index.json` names, with the index);
- config.json (with `auto_map`) and preprocessor_config.json;
- the model code: every module that the `auto_map` of config.json (and of preprocessor_config.json, and
  `custom_pipelines`) names, with every file it imports by single-dot relative import, found the way transformers
  finds them when it loads remote code (`get_relative_import_files`) — i.e. the files `save_pretrained` copied, or,
  for a folder kept without code (the zoo's model_cards/<name>/), the same files of the installed package;
- all_results.json, training_args.json (the run's arguments as JSON) and the run's PNG plots;
- README.md, the model card written from those files (`ttt_hf.hub.vit_card`, `ttt_hf.hub.gpicl_card`), validated
  offline (dry runs too) and then by the Hub's validate-yaml endpoint before anything is created.
Nothing pickled (Trainer's training_args.bin, optimizer, scheduler and RNG states), no checkpoint-* folder and no
trainer_state.json goes up.

A publish records the files it uploaded in the repo (`.ttt-hf.json`), and a later one deletes, of the files the run
no longer has, only those an earlier publish uploaded: a republish leaves no stale file of ours behind, and keeps
what others added (notes, `.eval_results/`, files merged from pull requests). README.md is always the card the run's
files make, so edits to it are replaced. Before the manifest existed, publishes uploaded only the run's file kinds
(`OWN_FILE_PATTERNS`), which stand in for it. The commit names its parent: a push that lands in between makes the
publish fail, saying so, instead of overwriting it. Earlier commits stay reachable:
`from_pretrained(repo_id, revision=<commit>)` still loads them.

The token comes from huggingface_hub's own resolution (`HF_TOKEN`, then the stored `hf auth login`) unless passed;
it is sent only in the Authorization header and never written to a log, an error message, the card or a file.
"""

import argparse
import json
import os
import sys
from dataclasses import dataclass
from pathlib import Path

from huggingface_hub import (
    CommitOperationAdd,
    CommitOperationDelete,
    HfApi,
    ModelCard,
    SpaceCard,
    constants,
    get_token,
)
from huggingface_hub.errors import HfHubHTTPError, HFValidationError, RevisionNotFoundError
from huggingface_hub.utils import validate_repo_id

from ..common.provenance import code_provenance, modeling_folder
from ..common.run_files import CARD_FILE, RESULTS_FILE, TRAINING_ARGS_FILE, write_files
from .gpicl_card import build_gpicl_card, check_gpicl_card
from .space import SPACE_SDK, check_space_card, folder_files
from .vit_card import build_card, check_card

try:  # the HTTP client under huggingface_hub: httpx2 from huggingface_hub 2, httpx before
    import httpx2 as http_client
except ImportError:  # pragma: no cover
    import httpx as http_client

KEPT_REMOTE_FILES = (".gitattributes",)  # never deleted from the repo
MANIFEST_FILE = ".ttt-hf.json"  # in the repo: {"files": [what the last publish uploaded], "ttt_hf_version": ...}
# the kinds of file a publish uploads besides the card: what counts as ours in a repo without a manifest
OWN_FILE_PATTERNS = ("*.py", "*.png", "*.safetensors", "config.json", "preprocessor_config.json", RESULTS_FILE,
                     TRAINING_ARGS_FILE)  # fmt: skip


class HubPublishError(OSError):
    """Publishing failed: the message names the cause (no token, a rejected token, a server or network failure)."""


@dataclass
class Published:
    repo_id: str
    files: list[str]
    commit: str | None = None  # None for a dry run
    url: str | None = None  # the commit (or pull request) on the Hub, or the dry-run folder
    tag: str | None = None  # the tag made on the commit


def check_repo_id(repo_id: str) -> None:
    """huggingface_hub's own validation, before anything touches the network (a `ValueError` naming the rule)."""
    try:
        validate_repo_id(repo_id)
    except HFValidationError as error:
        raise ValueError(f"invalid repo id {repo_id!r}: {error} Use 'namespace/name' or 'name'.") from None


def _read_json(path: Path) -> dict:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as error:
        raise ValueError(f"{path} is not valid JSON ({error}): the run is incomplete or damaged.") from None


def _modules(auto_map: dict) -> set[str]:
    """Module names of `auto_map` entries ('module.Class', 'repo--module.Class', or lists of them)."""
    names = set()
    for refs in auto_map.values():
        for ref in refs if isinstance(refs, (list, tuple)) else [refs]:
            if ref:
                names.add(ref.split("--")[-1].rsplit(".", 1)[0])
    return names


def weight_files(run: Path) -> list[str]:
    index = run / "model.safetensors.index.json"
    if index.exists():
        return sorted(set(_read_json(index)["weight_map"].values())) + [index.name]
    return ["model.safetensors"]


def code_files(run: Path, config: dict, processor_config: dict) -> dict[str, Path]:
    """The model code of the run, path in the repo -> file: the modules `auto_map` names, the pipelines of the config
    class (`REMOTE_PIPELINES`) and of config.json, and every file they import relatively — what transformers
    downloads for `trust_remote_code=True`. They come from the run, where `save_pretrained` copied them; a folder
    with no .py file at all (a zoo folder in model_cards/, kept without code) gets them from the installed package
    instead, found the same way."""
    from transformers import CONFIG_MAPPING
    from transformers.dynamic_module_utils import get_relative_import_files

    modules = _modules(config.get("auto_map") or {}) | _modules(processor_config.get("auto_map") or {})
    model_type = config.get("model_type")
    config_class = CONFIG_MAPPING[model_type] if model_type in CONFIG_MAPPING else None
    pipelines = {**getattr(config_class, "REMOTE_PIPELINES", {}), **(config.get("custom_pipelines") or {})}
    modules |= {p["impl"].rsplit(".", 1)[0] for p in pipelines.values() if "impl" in p}
    if not modules:
        raise ValueError(
            f"{run / 'config.json'} has no auto_map, so the repo could not load without ttt_hf: save the model with "
            "`TTTViTForImageClassification.save_pretrained` (ttt-hf train does)."
        )
    root = run if any(run.glob("*.py")) else modeling_folder()
    files = {f"{module.replace('.', '/')}.py" for module in modules}
    missing = sorted(name for name in files if not (root / name).is_file())
    if missing:
        raise FileNotFoundError(
            f"{root} is incomplete: missing {', '.join(missing)} (named by config.json's auto_map)."
        )
    for name in list(files):
        files |= {os.path.relpath(path, root) for path in get_relative_import_files(root / name)}
    return {name: root / name for name in sorted(files)}


def repo_files(run_dir, repo_id: str, provenance: bool = True) -> dict[str, Path | bytes]:
    """Exactly what a publish uploads: path in the repo -> a file of the run, or generated bytes (the card, and
    config.json with the provenance of the uploaded code, `uploaded_code_provenance`; `provenance=False` leaves it
    out, for a folder that is not uploaded as it stands). Raises `FileNotFoundError` naming every missing file,
    `ValueError` for a damaged run or an invalid card."""
    run = Path(run_dir)
    if not run.is_dir():
        raise FileNotFoundError(f"run directory {run} does not exist (give the --output_dir of a `ttt-hf train` run).")
    in_context = (run / "config.json").is_file() and _read_json(run / "config.json").get("model_type") == "gpicl"
    required = ["config.json", RESULTS_FILE, TRAINING_ARGS_FILE] + ([] if in_context else ["preprocessor_config.json"])
    missing = [name for name in required if not (run / name).is_file()]
    if missing:
        hint = (
            f" ({TRAINING_ARGS_FILE} is written by `ttt-hf train`; runs made before it existed need training again)"
            if TRAINING_ARGS_FILE in missing
            else ""
        )
        raise FileNotFoundError(f"{run} is not a complete training run: missing {', '.join(missing)}{hint}.")
    config = _read_json(run / "config.json")
    processor_config = {} if in_context else _read_json(run / "preprocessor_config.json")
    results, arguments = _read_json(run / RESULTS_FILE), _read_json(run / TRAINING_ARGS_FILE)
    code = code_files(run, config, processor_config)
    names = weight_files(run) + required
    names += sorted(path.name for path in run.glob("*.png") if path.is_file())
    missing = [name for name in names if not (run / name).is_file()]
    missing += [name for name, path in code.items() if not path.is_file()]
    if missing:
        raise FileNotFoundError(f"{run} is incomplete: missing {', '.join(missing)}.")
    files: dict[str, Path | bytes] = dict(sorted({**{name: run / name for name in names}, **code}.items()))
    if provenance:
        config = {**config, **uploaded_code_provenance(code, arguments)}
        files["config.json"] = (json.dumps(config, indent=2, sort_keys=True) + "\n").encode()
    if in_context:  # a `ttt-hf meta-train` run: an in-context learner
        card = build_gpicl_card(repo_id, config, results, arguments, files=list(files))
        check_gpicl_card(card, results)
    else:
        card = build_card(repo_id, config, results, arguments, files=list(files))
        check_card(card, results)
    files[CARD_FILE] = str(card).encode("utf-8")
    return files


def uploaded_code_provenance(code: dict[str, Path], arguments: dict) -> dict:
    """The ttt-hf version and commit of the model code a publish uploads (`code`: path in the repo -> file): the
    installed package's (`code_provenance`) if the files are its own, else what the run recorded when
    `save_pretrained` copied them (training_args.json's "code"), else unknown (None)."""
    package = modeling_folder()
    theirs = {name: package / name for name in code}
    if all(path.is_file() and path.read_bytes() == code[name].read_bytes() for name, path in theirs.items()):
        return code_provenance(list(theirs.values()))
    recorded = arguments.get("code") or {}
    return {key: recorded.get(key) for key in ("ttt_hf_version", "ttt_hf_commit")}


def check_tag(tag: str) -> None:
    """A tag name git and the Hub accept (letters, digits and . _ - /, not starting with - or /, no ..): a
    `ValueError` naming the rule, before anything is uploaded."""
    import re

    if not re.fullmatch(r"[A-Za-z0-9._][A-Za-z0-9._/-]{0,99}", tag) or ".." in tag or tag.endswith(("/", ".lock")):
        raise ValueError(
            f"--tag {tag!r} is not a valid tag name: use letters, digits and . _ - / (at most 100 characters, not "
            "starting with - or /, without '..'), e.g. v1.0."
        )


def _reason(error: BaseException, repo_id: str) -> str:
    """Why a Hub call failed, in words a user can act on."""
    response = getattr(error, "response", None)
    status = getattr(response, "status_code", None)
    if isinstance(error, HfHubHTTPError) and status is not None:
        server = (getattr(error, "server_message", None) or "").strip().splitlines()
        detail = f" (the Hub said: {server[0]})" if server else ""
        if status == 401:
            return (
                f"the Hub at {constants.ENDPOINT} rejected the token (401 Unauthorized){detail}: it is invalid, "
                "expired or revoked. Log in again (`hf auth login`) or set HF_TOKEN to a token with write access"
            )
        if status == 403:
            return f"the token may not write to {repo_id} (403 Forbidden){detail}: use a token with write access there"
        if status == 404:
            return f"{repo_id} or its revision was not found (404){detail}"
        if status == 412:
            return f"another push reached {repo_id} while this one was being prepared (412){detail}"
        if status >= 500:
            return f"the Hub at {constants.ENDPOINT} failed with a server error ({status}){detail}"
        return f"the Hub answered {status}{detail}"
    if isinstance(error, (http_client.HTTPError, ConnectionError, TimeoutError)):
        return f"the connection to {constants.ENDPOINT} failed ({type(error).__name__}: {error or 'no details'})"
    return f"{type(error).__name__}: {error}"


def _cause(error: BaseException) -> tuple[BaseException | None, str]:
    """The network or HTTP error behind `error` (huggingface_hub wraps a failed LFS upload in a RuntimeError whose
    message names the file), and that file as ' (uploading x)'; (None, '') for anything else (a bug: re-raised)."""
    if isinstance(error, RuntimeError) and not isinstance(error, (http_client.HTTPError, OSError)):
        cause = error.__cause__
        if isinstance(cause, (HfHubHTTPError, http_client.HTTPError, OSError)):
            text = str(error).rstrip(".")  # "Error while uploading 'model.safetensors' to the Hub"
            return cause, f" ({text[0].lower()}{text[1:]})"
        return None, ""
    return error, ""


def _request_path(error: BaseException) -> str:
    """The URL path of the request that failed, or '' if the error does not say."""
    for source in (getattr(error, "response", None), error):
        try:
            return str(source.request.url.path)
        except (AttributeError, RuntimeError):
            continue
    return ""


def _version() -> str:
    from .. import __version__

    return __version__


def _write_token(token: str | None, consequence: str) -> str:
    """The token given, else huggingface_hub's own (HF_TOKEN, then the stored login); HubPublishError if none."""
    token = token or get_token()
    if not token:
        raise HubPublishError(
            "no Hugging Face token: log in with `hf auth login` or set HF_TOKEN to a token with write access "
            f"({consequence})."
        )
    return token


def _uploaded_before(api: HfApi, repo_id: str, revision: str, remote: list[str], repo_type: str = "model") -> set[str]:
    """The files of the repo that earlier publishes of ttt-hf uploaded: its manifest's list, or, for a repo without
    one, the remote files of the kinds a publish uploads."""
    import fnmatch

    if MANIFEST_FILE in remote:
        manifest = api.hf_hub_download(repo_id, MANIFEST_FILE, revision=revision, repo_type=repo_type)
        return set(json.loads(Path(manifest).read_text())["files"])
    return {name for name in remote if "/" not in name and any(fnmatch.fnmatch(name, p) for p in OWN_FILE_PATTERNS)}


def publish(
    run_dir,
    repo_id: str,
    *,
    private: bool = False,
    revision: str | None = None,
    create_pr: bool = False,
    commit_message: str | None = None,
    dry_run=None,
    token: str | None = None,
    tag: str | None = None,
    repo_type: str = "model",
) -> Published:
    """Upload the run in `run_dir` to the model repo `repo_id` in one commit (see the module docstring for the
    files), creating the repo if needed (`private` applies only then). `revision`: a branch (made from main if
    new); `create_pr`: open a pull request instead of committing to the branch. `dry_run=DIR` writes the files
    into DIR and uploads nothing. `tag`: tag the new commit (a tag that exists already stops the publish before it
    commits). `repo_type="space"`: `run_dir` is a Space folder (`ttt-hf zoo space`), uploaded as it stands to the
    Space `repo_id`, the same way. Raises `ValueError` (repo id, tag, run, card), `FileNotFoundError` (a missing
    file) or `HubPublishError` (token, server, network) before reporting any success; the run directory is only
    read."""
    check_repo_id(repo_id)
    if repo_type not in ("model", "space"):
        raise ValueError(f"repo_type must be 'model' or 'space', not {repo_type!r}.")
    space = repo_type == "space"
    if tag is not None:
        check_tag(tag)
        if create_pr:
            raise ValueError("--tag names a published commit, and a pull request is not one yet: tag after merging.")
    gather = (lambda _: dict(folder_files(run_dir))) if space else (lambda name: repo_files(run_dir, name))
    files = gather(repo_id)
    card_text = files[CARD_FILE] if isinstance(files[CARD_FILE], bytes) else files[CARD_FILE].read_bytes()
    card = (SpaceCard if space else ModelCard)(card_text.decode("utf-8"))
    if space:
        check_space_card(card)
    if dry_run is not None:
        folder = write_files(files, dry_run, "--dry-run folder")
        return Published(repo_id, sorted(files), url=str(folder))

    token = _write_token(token, "nothing was uploaded; `--dry-run DIR` shows what would be")
    api = HfApi(token=token)
    step, committed = f"validating the {repo_type} card with the Hub", False
    try:
        try:
            card.validate(repo_type=repo_type)  # the Hub's own metadata rules
        except ValueError as error:
            raise ValueError(f"the Hub rejects the {repo_type} card of {run_dir}: {error}") from None
        step = "creating the repo"
        url = api.create_repo(repo_id, private=private, exist_ok=True, repo_type=repo_type,
                              space_sdk=SPACE_SDK if space else None)  # fmt: skip
        if url.repo_id != repo_id:  # a bare name lands in the token's namespace: the card names the full id
            repo_id = url.repo_id
            files = gather(repo_id)
        step = "listing the repo's files"
        try:
            head = api.repo_info(repo_id, revision=revision, repo_type=repo_type).sha
        except RevisionNotFoundError:
            if revision is None or create_pr:
                raise
            step = f"creating the branch {revision!r}"
            api.create_branch(repo_id, branch=revision, exist_ok=True, repo_type=repo_type)
            head = api.repo_info(repo_id, revision=revision, repo_type=repo_type).sha
        if tag is not None:
            step = "listing the repo's tags"
            existing = {ref.name: ref.target_commit for ref in api.list_repo_refs(repo_id, repo_type=repo_type).tags}
            if tag in existing:
                raise ValueError(
                    f"{repo_id} has a tag {tag!r} already (commit {existing[tag]}): choose another --tag. Nothing "
                    "was committed."
                )
        remote = api.list_repo_files(repo_id, revision=head, repo_type=repo_type)
        ours = _uploaded_before(api, repo_id, head, remote, repo_type)
        manifest = json.dumps({"files": sorted([*files, MANIFEST_FILE]), "ttt_hf_version": _version()}, indent=2)
        operations = [CommitOperationAdd(path_in_repo=name, path_or_fileobj=source if isinstance(source, bytes)
                                         else str(source)) for name, source in files.items()]  # fmt: skip
        operations.append(CommitOperationAdd(path_in_repo=MANIFEST_FILE, path_or_fileobj=manifest.encode() + b"\n"))
        stale = sorted((set(remote) & ours) - set(files) - {MANIFEST_FILE, *KEPT_REMOTE_FILES})
        operations += [CommitOperationDelete(path_in_repo=name) for name in stale]
        step = f"uploading {len(files)} files and committing"
        info = api.create_commit(
            repo_id,
            operations,
            commit_message=commit_message or f"Publish {Path(run_dir).resolve().name} with ttt-hf",
            commit_description=(f"Deleted files the run no longer has: {', '.join(stale)}." if stale else None),
            revision=revision,
            create_pr=create_pr,
            parent_commit=head,
            repo_type=repo_type,
        )
        committed = True
        step = "checking the new commit"
        present = set(api.list_repo_files(repo_id, revision=info.oid, repo_type=repo_type))
        if tag is not None:
            step = f"tagging the commit {tag!r}"
            api.create_tag(
                repo_id, tag=tag, revision=info.oid, tag_message=f"ttt-hf {_version()}", repo_type=repo_type
            )
    except (HfHubHTTPError, http_client.HTTPError, OSError, RuntimeError) as raised:
        error, what = _cause(raised)
        if error is None:
            raise
        if committed and step.startswith("tagging"):
            outcome = (
                f"the commit was made ({info.oid}) but not tagged: tag it with "
                f"`hf repos tag create {repo_id} {tag} --revision {info.oid}`"
            )
        elif committed:
            outcome = f"the commit was made ({info.oid}) but could not be checked"
        elif _request_path(error).find("/commit/") >= 0 and not isinstance(error, HfHubHTTPError):
            outcome = "the commit may or may not have been made (the request was cut off): check the repo's history"
        else:
            outcome = "nothing was committed"
        message = (
            f"publishing {run_dir} to {repo_id} failed while {step}{what}: {_reason(error, repo_id)}. "
            f"{outcome[0].upper()}{outcome[1:]}; the run directory is unchanged, and running the same command again "
            "is safe (it makes the repo match the run)."
        )
        raise HubPublishError(message.replace(token, "<token>")) from None
    wrong = sorted((set(files) - present) | (set(stale) & present))
    if wrong:
        raise HubPublishError(
            f"the Hub's commit {info.oid} of {repo_id} does not hold exactly the run's files (differences: "
            f"{', '.join(wrong)}): publish again."
        )
    return Published(repo_id, sorted(files), commit=info.oid, url=info.pr_url or info.commit_url, tag=tag)


COLLECTION_DESCRIPTION_CHARS = 150  # the Hub's limit (huggingface_hub's `create_collection`)


def add_to_collection(title: str, namespace: str, repo_ids: list[str], description: str | None = None, token=None):
    """Gather the model repos `repo_ids` into the collection `title` of `namespace`: created if it does not exist,
    found again if it does, and each repo added once (a repo already in it stays where it is). Returns the
    collection's URL; raises `ValueError` for a bad title or description, `HubPublishError` naming the step that
    failed (running it again is safe)."""
    if not title.strip():
        raise ValueError("--collection needs a title, e.g. --collection 'TTT-ViT zoo'.")
    if description is not None and len(description) > COLLECTION_DESCRIPTION_CHARS:
        raise ValueError(f"a collection's description holds at most {COLLECTION_DESCRIPTION_CHARS} characters.")
    token = _write_token(token, "no collection was made")
    api = HfApi(token=token)
    step = f"creating the collection {title!r} in {namespace}"
    try:
        collection = api.create_collection(title, namespace=namespace, description=description, exists_ok=True)
        for repo_id in repo_ids:
            step = f"adding {repo_id} to the collection {collection.slug}"
            api.add_collection_item(collection.slug, item_id=repo_id, item_type="model", exists_ok=True)
    except (HfHubHTTPError, http_client.HTTPError, OSError) as error:
        message = (
            f"gathering {len(repo_ids)} models into a collection failed while {step}: {_reason(error, namespace)}. "
            "The models themselves are published; running the same command again is safe."
        )
        raise HubPublishError(message.replace(token, "<token>")) from None
    return collection.url


def argument_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="ttt-hf publish",
        description="Upload a `ttt-hf train` run (weights, config, model code, image processor, results, plots and a "
        "generated model card) to a Hub model repo in one commit. The token comes from HF_TOKEN or `hf auth login`.",
    )
    parser.add_argument("run_dir", help="the --output_dir of a training run")
    parser.add_argument("repo_id", help="'namespace/name' (or 'name': your own namespace)")
    parser.add_argument("--private", action="store_true", help="create the repo private (no effect if it exists)")
    target = parser.add_mutually_exclusive_group()
    target.add_argument("--revision", help="commit to this branch (created from main if new)")
    target.add_argument("--create-pr", "--create_pr", action="store_true", help="open a pull request instead")
    parser.add_argument("--commit-message", "--commit_message", help="the commit's title")
    parser.add_argument("--dry-run", "--dry_run", metavar="DIR", help="write the files into DIR; upload nothing")
    parser.add_argument("--tag", help="tag the published commit (e.g. v1.0); an existing tag stops the publish")
    return parser


def main(argv: list[str] | None = None) -> Published:
    args = argument_parser().parse_args(sys.argv[1:] if argv is None else argv)
    result = publish(
        args.run_dir,
        args.repo_id,
        private=args.private,
        revision=args.revision,
        create_pr=args.create_pr,
        commit_message=args.commit_message,
        dry_run=args.dry_run,
        tag=args.tag,
    )
    listing = "\n".join(f"  {name}" for name in result.files)
    if result.commit is None:
        print(
            f"dry run: the {len(result.files)} files a publish to {result.repo_id} would upload are in {result.url}:"
        )
        print(listing)
    else:
        tagged = f", tagged {result.tag}" if result.tag else ""
        print(f"published {len(result.files)} files to {result.repo_id} (commit {result.commit}{tagged}):\n{listing}")
        print(result.url)
    return result


if __name__ == "__main__":
    main()


__all__ = [
    "HubPublishError",
    "add_to_collection",
    "Published",
    "check_repo_id",
    "code_files",
    "main",
    "publish",
    "repo_files",
]
