"""Reading and checking params.yaml.

Every stage validates all keys before doing any work (load runs check_all), so a typo costs
a one-line message naming the key, the value and what is allowed, not a
crash twenty minutes into training.
"""

from __future__ import annotations

import numbers
from pathlib import Path

import yaml

from .errors import LungdxError, ParamError

_MISSING = object()


def load(path: str | Path = "params.yaml", check: bool = True) -> dict:
    """params.yaml, with every stage's checks run (see check_all) unless check is False."""
    path = Path(path)
    try:
        params = yaml.safe_load(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise LungdxError(f"{path}: not found; run the stage from the project root (where dvc.yaml is)") from None
    except yaml.YAMLError as exc:
        raise LungdxError(f"{path}: not valid YAML: {exc}") from None
    if not isinstance(params, dict):
        raise LungdxError(f"{path}: expected a mapping of parameters at the top level")
    return check_all(params) if check else params


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

def check_all(params: dict) -> dict:
    """Every stage's checks at once. `load` runs them, so whichever stage `dvc repro` starts
    first stops on a bad value anywhere in params.yaml, before any work."""
    # dataset.source itself is checked by download, the first stage (only it needs the source to exist).
    if get(params, "dataset.source", default=None) == "synthetic":
        integer(params, "dataset.synthetic.per_class", minimum=1)
        integer(params, "dataset.synthetic.image_size", minimum=32, default=256)
    sample_settings(params)
    prepare_settings(params)
    baseline_settings(params)
    gradcam_settings(params)
    model_settings(params)
    return params


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


def baseline_settings(params: dict) -> dict:
    return {"seed": integer(params, "seed", minimum=0),
            "image_size": integer(params, "baseline.image_size", minimum=4),
            "n_estimators": integer(params, "baseline.n_estimators", minimum=1)}


def gradcam_settings(params: dict) -> dict:
    layer = get(params, "gradcam.layer", default=None)
    if layer is not None and not (isinstance(layer, str) and layer):
        raise ParamError("gradcam.layer", layer, "null (the last conv layer) or a conv layer's name")
    return {"per_class": integer(params, "gradcam.per_class", minimum=1), "layer": layer}


# Shared by both architectures; each can override these under models.<name>.
MODEL_DEFAULTS = {"dropout": 0.3, "dense_units": 160, "patience": 10, "warmup_epochs": 0}
ARCHITECTURES = ("cnn", "vgg19")


def model_settings(params: dict) -> dict:
    """Check `model` and `models.<model>` before any work."""
    arch = choice(params, "model", ARCHITECTURES)
    key = f"models.{arch}"
    if not isinstance(get(params, key, default={}), dict):
        raise ParamError(key, get(params, key), "a mapping of training settings (see README)")
    cfg = {
        "model": arch,
        "seed": integer(params, "seed", minimum=0),
        "image_size": integer(params, "prepare.image_size", minimum=16),
        "epochs": integer(params, f"{key}.epochs", minimum=1),
        "batch_size": integer(params, f"{key}.batch_size", minimum=1),
        "learning_rate": positive(params, f"{key}.learning_rate"),
        "patience": integer(params, f"{key}.patience", minimum=1, default=MODEL_DEFAULTS["patience"]),
        "warmup_epochs": integer(params, f"{key}.warmup_epochs", minimum=0, default=MODEL_DEFAULTS["warmup_epochs"]),
        "dense_units": integer(params, f"{key}.dense_units", minimum=1, default=MODEL_DEFAULTS["dense_units"]),
        "dropout": get(params, f"{key}.dropout", default=MODEL_DEFAULTS["dropout"]),
    }
    if isinstance(cfg["dropout"], bool) or not isinstance(cfg["dropout"], (int, float)) or not 0 <= cfg["dropout"] < 1:
        raise ParamError(f"{key}.dropout", cfg["dropout"], "a number from 0 up to (not including) 1")
    if arch == "cnn":
        filters = get(params, f"{key}.filters", default=[16, 32, 64, 128, 256])
        if not isinstance(filters, list) or not filters or not all(
                isinstance(f, int) and not isinstance(f, bool) and f > 0 for f in filters):
            raise ParamError(f"{key}.filters", filters, "a non-empty list of positive integers")
        if cfg["image_size"] < 2 ** len(filters):
            raise ParamError("prepare.image_size", cfg["image_size"],
                             f"at least {2 ** len(filters)} for a cnn with {len(filters)} poolings")
        cfg["filters"] = filters
    else:
        if cfg["image_size"] < 32:
            raise ParamError("prepare.image_size", cfg["image_size"], "at least 32 for vgg19 (five 2x2 poolings)")
        cfg["weights"] = resolve_vgg19_weights(get(params, f"{key}.weights", default="imagenet"))
        cfg["fine_tune_blocks"] = integer(params, f"{key}.fine_tune_blocks", minimum=0, default=0)
        if cfg["fine_tune_blocks"] > 5:
            raise ParamError(f"{key}.fine_tune_blocks", cfg["fine_tune_blocks"], "an integer from 0 to 5")
        cfg["fine_tune_epochs"] = integer(params, f"{key}.fine_tune_epochs", minimum=1, default=5)
        cfg["fine_tune_learning_rate"] = positive(params, f"{key}.fine_tune_learning_rate", default=1e-5)
    return cfg


def resolve_vgg19_weights(value) -> str | None:
    """`imagenet` (Keras download, cached under KERAS_HOME), `none`, or a local .h5 path."""
    if value in (None, "none", "None"):
        return None
    if value == "imagenet":
        return "imagenet"
    path = Path(str(value)).expanduser()
    if not path.is_file() or path.suffix != ".h5":
        raise ParamError("models.vgg19.weights", value,
                         f"imagenet, none, or the path of an existing .h5 file ({path} "
                         + ("is not .h5)" if path.is_file() else "does not exist)"))
    return str(path)
