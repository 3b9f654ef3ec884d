import os

import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # tests never reach the network
# The fused Triton kernels run on the tests' CPU tensors in Triton's interpreter (read when the kernels are
# defined: before ttt_hf's import); on a GPU, test_fused_kernels_on_cuda runs them compiled in a subprocess.
# (setdefault: that subprocess sets "0" first; so would a shell, which makes the CPU kernel tests fail.)
os.environ.setdefault("TRITON_INTERPRET", "1")

from ttt_hf import TTTViTConfig  # noqa: E402

# Prepended to a `python -c` script: ttt_hf cannot be imported in that process, as on a machine without it, so
# checkpoints must load through their remote code (trust_remote_code=True).
HIDE_TTT_HF = """
import importlib.abc, json, sys
class BlockTTTHF(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name == "ttt_hf" or name.startswith("ttt_hf."):
            raise ImportError("ttt_hf is hidden in this process")
sys.meta_path.insert(0, BlockTTTHF())
try:
    import ttt_hf  # noqa: F401
    raise SystemExit("ttt_hf should not be importable here")
except ImportError:
    pass
"""

TINY = dict(
    image_size=8,
    patch_size=2,
    num_channels=3,
    hidden_size=12,
    num_hidden_layers=2,
    num_attention_heads=3,
    intermediate_size=24,
)


def tiny_config(**overrides) -> TTTViTConfig:
    """A TTT-ViT small enough for float64 checks: 16 tokens of width 12, 3 heads of width 4."""
    return TTTViTConfig(**{**TINY, **overrides})


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


@pytest.fixture
def hub_server(tmp_path_factory, monkeypatch):
    """A Hugging Face Hub stand-in on 127.0.0.1 (tests/hub_server.py), logged in as `hub_server.user`.

    Yields a `HubServer`: `.endpoint`, `.token`, `.user`, `.add_user(name, orgs=())` -> token; server-side views
    `.head(repo_id, rev)`, `.commits()`, `.files()` (path -> bytes), `.file_entries()` (LFS oid, blob id),
    `.stored_blob()` (the LFS pointer), `.lfs_puts`, `.requests_to(regex)`, `.unhandled`, `.server_errors`;
    seeding `.create_repo()`, `.commit_files()`; faults `.fail(regex, status=500, times=1, method=None)` and
    `.drop(regex, times=1, method=None)` (close the socket mid-body, no response), `.clear_faults()`.

    Pointing the client at it (huggingface_hub reads HF_ENDPOINT, HF_HUB_OFFLINE and HF_HUB_DISABLE_XET at import):
    - recommended, and required for transformers' `from_pretrained`: a fresh subprocess with
      `env=hub_server.env(hf_home, token=True | "hf_wrong" | None, offline=False)` -- HF_ENDPOINT, an HF_HOME of your
      own (empty: empty cache, no stored token), HF_HUB_DISABLE_XET=1 (the client would upload through Xet, which the
      server does not speak), HF_TOKEN; `offline=True` then reloads from that cache with HF_HUB_OFFLINE=1.
    - in this process: this fixture already patched huggingface_hub (endpoint, offline flag off, Xet off, cache and
      token paths in a fresh HF_HOME, HF_TOKEN = the valid token) for the test, so `HfApi()`, `upload_folder`,
      `hf_hub_download` reach the server; `hub_server.api(token=...)` gives an `HfApi` with another token (None:
      anonymous); `monkeypatch.delenv("HF_TOKEN")` logs out.
    huggingface_hub retries a dropped connection or a 5xx upload with sleeps (23 s in all): for fast fault tests call
    `tests.hub_server.no_retry_sleep(monkeypatch)` in-process, or prepend `tests.hub_server.NO_RETRY_SLEEP` to a
    `python -c` client script. `hub_server.python(code, hf_home, token=..., offline=...)` runs such a script.
    The server stops at teardown, and by itself after 10 idle minutes.
    """
    from .hub_server import HubServer

    server = HubServer().start()
    try:
        server.patch_client(monkeypatch, tmp_path_factory.mktemp("hf_home"))
        yield server
    finally:
        server.close()
