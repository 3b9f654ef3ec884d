"""Loading a checkpoint named by the user: a local directory or a Hub model id, with an error that says which."""

import os

from huggingface_hub.utils import HFValidationError, validate_repo_id


def from_pretrained(loader, name: str, **kwargs):
    """`loader.from_pretrained(name, **kwargs)`, where a `name` that is no directory here gets an error naming the
    directory it looked for, instead of transformers' message about the Hub (which it tries next, and which a
    mistyped path can never be)."""
    if os.path.isdir(name):
        return loader.from_pretrained(name, **kwargs)
    here = os.path.abspath(os.path.expanduser(name))
    try:
        validate_repo_id(name)
    except HFValidationError:
        raise FileNotFoundError(f"{name!r}: no such directory ({here}), and not a Hub model id either.") from None
    if name.startswith((".", "~", os.sep)):
        raise FileNotFoundError(f"{name!r}: no such directory ({here}).")
    try:
        return loader.from_pretrained(name, **kwargs)
    except OSError as error:
        raise OSError(
            f"{name!r} is not a directory here ({here}), and loading it as a Hub model id failed: {error}"
        ) from None


__all__ = ["from_pretrained"]
