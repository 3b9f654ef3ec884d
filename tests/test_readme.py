"""The README's two set-up commands are the ones the project runs: CI runs the test command verbatim."""

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def setup_commands() -> list[str]:
    blocks = re.findall(r"```bash\n(.*?)```", (ROOT / "README.md").read_text(), flags=re.S)
    return [line for block in blocks for line in block.splitlines() if line.startswith("python3 -m venv")]


def test_readme_has_exactly_two_setup_commands_and_ci_runs_the_test_one():
    commands = setup_commands()
    assert len(commands) == 2, commands
    main_job, tests = commands
    assert main_job.endswith("ttt-hf quickstart") and tests.endswith("pytest -q")
    ci = (ROOT / ".ci" / "run").read_text()
    assert tests in ci.splitlines(), "CI must run the README's test command verbatim"


def test_readme_lists_real_presets():
    from ttt_hf import TTTViTConfig
    from ttt_hf.zoo import ZOO

    names = set(re.findall(r"`(ttt-vit-[a-z0-9-]+)`", (ROOT / "README.md").read_text()))
    known = set(TTTViTConfig.presets()) | set(ZOO)  # presets, and the zoo's models
    assert names and names <= known, names - known
