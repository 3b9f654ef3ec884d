"""Helpers every command shares: `--config_overrides` parsing and checking, and ttt_hf's log lines on stdout."""

import dataclasses
import difflib
import json
import logging
import sys

from transformers import TrainingArguments

DEFAULT_SEED = TrainingArguments.__dataclass_fields__["seed"].default  # `ttt-hf train` without --seed


def parse_overrides(text: str | None) -> dict:
    """'a=1,b=x,c=[1,2]' -> {'a': 1, 'b': 'x', 'c': [1, 2]} (values read as JSON when they parse)."""
    overrides = {}
    for item in filter(None, (part.strip() for part in (text or "").split(","))):
        if "=" not in item:
            raise ValueError(f"--config_overrides expects key=value pairs separated by commas, got {item!r}.")
        key, value = (s.strip() for s in item.split("=", 1))
        try:
            overrides[key] = json.loads(value)
        except json.JSONDecodeError:
            overrides[key] = value
    return overrides


def check_override_keys(overrides: dict, config_class: type) -> None:
    """Refuse a key that is not a field of `config_class` (a config would keep it silently), naming the closest."""
    fields = [f.name for f in dataclasses.fields(config_class)]
    settable = set(fields) - {"id2label", "label2id", "transformers_version", "architectures"}
    for key in overrides:
        if key not in settable:
            close = difflib.get_close_matches(key, fields, n=3, cutoff=0.6)
            hint = f" Did you mean {' or '.join(map(repr, close))}?" if close else ""
            labels = " (labels come from the dataset)" if key in ("num_labels", "id2label", "label2id") else ""
            raise ValueError(
                f"--config_overrides: {key!r} is not a field of {config_class.__name__}{labels}.{hint} Fields: "
                f"{', '.join(sorted(settable))}."
            )


class _StdoutHandler(logging.StreamHandler):
    """A handler that writes to whatever `sys.stdout` is when it logs (a caller may have replaced it since)."""

    @property
    def stream(self):
        return sys.stdout

    @stream.setter
    def stream(self, value):  # StreamHandler.__init__ sets it; the property always answers sys.stdout
        pass


def setup_logging(training_args: TrainingArguments) -> None:
    """ttt_hf's log lines on stdout, through one handler of its own (nothing on the root logger, so libraries
    with their own handlers, huggingface_hub's among them, are not printed twice)."""
    package = logging.getLogger("ttt_hf")
    if not any(isinstance(handler, _StdoutHandler) for handler in package.handlers):
        handler = _StdoutHandler()
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s", "%H:%M:%S"))
        package.addHandler(handler)
        package.propagate = False
    package.setLevel(logging.INFO if training_args.should_log else logging.WARNING)


__all__ = ["DEFAULT_SEED", "check_override_keys", "parse_overrides", "setup_logging"]
