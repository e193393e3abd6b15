"""Reading and checking params.yaml.

Each stage validates the keys it reads before doing any work, so a typo costs
a one-line message naming the key, the value and what is allowed, not a
crash twenty minutes into training.
"""

from __future__ import annotations

import numbers
from pathlib import Path

import yaml

from .errors import LungdxError, ParamError

_MISSING = object()


def load(path: str | Path = "params.yaml") -> dict:
    path = Path(path)
    try:
        params = yaml.safe_load(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise LungdxError(f"{path}: not found; run the stage from the project root (where dvc.yaml is)") from None
    except yaml.YAMLError as exc:
        raise LungdxError(f"{path}: not valid YAML: {exc}") from None
    if not isinstance(params, dict):
        raise LungdxError(f"{path}: expected a mapping of parameters at the top level")
    return params


def get(params: dict, key: str, default=_MISSING):
    """Value at a dotted key; a missing key without a default is a clear error."""
    node = params
    for part in key.split("."):
        if not isinstance(node, dict) or part not in node:
            if default is not _MISSING:
                return default
            raise ParamError(key, None, "this key is missing; see the params reference in README.md")
        node = node[part]
    return node


def integer(params: dict, key: str, minimum: int | None = None, default=_MISSING) -> int:
    value = get(params, key, default)
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise ParamError(key, value, "an integer" + (f" >= {minimum}" if minimum is not None else ""))
    if minimum is not None and value < minimum:
        raise ParamError(key, value, f"an integer >= {minimum}")
    return int(value)


def fraction(params: dict, key: str, default=_MISSING) -> float:
    """A number strictly between 0 and 1."""
    value = get(params, key, default)
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not 0 < value < 1:
        raise ParamError(key, value, "a number strictly between 0 and 1")
    return float(value)


def positive(params: dict, key: str, default=_MISSING) -> float:
    value = get(params, key, default)
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not value > 0:
        raise ParamError(key, value, "a number > 0")
    return float(value)


def choice(params: dict, key: str, allowed, default=_MISSING) -> str:
    value = get(params, key, default)
    if value not in allowed:
        raise ParamError(key, value, "one of " + ", ".join(map(str, allowed)))
    return value


def string_list(params: dict, key: str, default=_MISSING) -> list[str]:
    value = get(params, key, default)
    if value is None:
        return []
    if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
        raise ParamError(key, value, "a list of class folder names, e.g. [COVID, Normal], or [] for all")
    if len(set(value)) != len(value):
        raise ParamError(key, value, "a list without repeated names")
    return value


# --- the checks of each stage, so the stage scripts stay thin -------------------------

def sample_settings(params: dict) -> dict:
    settings = {
        "seed": integer(params, "seed", minimum=0),
        "classes": string_list(params, "dataset.classes", default=[]),
        "per_class": integer(params, "sample.per_class", minimum=1),
        "val_size": fraction(params, "sample.val_size"),
        "test_size": fraction(params, "sample.test_size"),
    }
    if settings["val_size"] + settings["test_size"] >= 1:
        raise ParamError("sample.val_size + sample.test_size",
                         settings["val_size"] + settings["test_size"],
                         "a sum below 1, so that some images are left for training")
    return settings


def prepare_settings(params: dict) -> dict:
    return {"image_size": integer(params, "prepare.image_size", minimum=16)}
