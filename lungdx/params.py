"""Reading and checking params.yaml.

Every stage validates all keys before doing any work (load runs check_all), so a typo costs
a one-line message naming the key, the value and what is allowed, not a
crash twenty minutes into training. check_all refuses unknown keys (with the nearest known
one), non-finite numbers, and values beyond the ranges that work (see docs/parameters.md).
"""

from __future__ import annotations

import difflib
import math
import numbers
import re
from pathlib import Path

import yaml

from .errors import LungdxError, ParamError

_MISSING = object()


class _Loader(yaml.SafeLoader):
    """YAML as DVC reads it: 3e-05 (no dot) is a number in YAML 1.2, which DVC follows and writes
    for `dvc exp run -S ...=3e-5`; PyYAML's YAML 1.1 rules would read it as text."""


_Loader.add_implicit_resolver("tag:yaml.org,2002:float",
                              re.compile(r"^[-+]?[0-9][0-9_]*(?:\.[0-9_]*)?[eE][-+]?[0-9]+$"), list("-+0123456789"))


def load(path: str | Path = "params.yaml", check: bool = True) -> dict:
    """params.yaml, with every stage's checks run (see check_all) unless check is False."""
    path = Path(path)
    try:
        params = yaml.load(path.read_text(encoding="utf-8"), Loader=_Loader)
    except FileNotFoundError:
        raise LungdxError(f"{path}: not found; run the stage from the project root (where dvc.yaml is)") from None
    except yaml.YAMLError as exc:
        raise LungdxError(f"{path}: not valid YAML: {exc}") from None
    if not isinstance(params, dict):
        raise LungdxError(f"{path}: expected a mapping of parameters at the top level")
    return check_all(params) if check else params


def with_changes(params: dict, changes: dict) -> dict:
    """A copy of `params` with dotted-key changes, as `dvc exp run -S key=value` makes them:
    with_changes(p, {"models.cnn.epochs": 2}). Each parent must exist as a mapping."""
    import copy

    params = copy.deepcopy(params)
    for key, value in changes.items():
        *parents, last = key.split(".")
        if not all(key.split(".")):
            raise ParamError(key, value, "a key is names joined by dots, e.g. models.cnn.epochs")
        node = params
        for depth, part in enumerate(parents):
            node = node.get(part) if isinstance(node, dict) else None
            if not isinstance(node, dict):
                raise ParamError(key, value, f"{'.'.join(parents[:depth + 1])} is not a group of params")
        node[last] = value
    return params


def get(params: dict, key: str, default=_MISSING):
    """Value at a dotted key; a missing key without a default is a clear error."""
    node = params
    for part in key.split("."):
        if not isinstance(node, dict) or part not in node:
            if default is not _MISSING:
                return default
            raise ParamError(key, None, "this key is missing: add it (the comments in params.yaml explain each key)")
        node = node[part]
    return node


def integer(params: dict, key: str, minimum: int | None = None, default=_MISSING,
            maximum: int | None = None) -> int:
    value = get(params, key, default)
    if minimum is not None and maximum is not None:
        allowed = f"an integer from {minimum} to {maximum}"
    else:
        allowed = "an integer" + (f" >= {minimum}" if minimum is not None else "") + (
            f" <= {maximum}" if maximum is not None else "")
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise ParamError(key, value, allowed)
    if (minimum is not None and value < minimum) or (maximum is not None and value > maximum):
        raise ParamError(key, value, allowed)
    return int(value)


def fraction(params: dict, key: str, default=_MISSING) -> float:
    """A number strictly between 0 and 1."""
    value = get(params, key, default)
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not 0 < value < 1:
        raise ParamError(key, value, "a number strictly between 0 and 1")
    return float(value)


def positive(params: dict, key: str, default=_MISSING) -> float:
    """A finite number > 0 (YAML's .inf and .nan are refused)."""
    value = get(params, key, default)
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not 0 < value < math.inf:
        raise ParamError(key, value, "a finite number > 0")
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
    for name in value:
        if "/" in name or "\\" in name or name.startswith("."):
            raise ParamError(key, value, f"a list of class folder names; {name!r} cannot be one "
                                         "(no slashes, no leading dot)")
    if len(set(value)) != len(value):
        raise ParamError(key, value, "a list without repeated names")
    return value


# --- the checks of each stage, so the stage scripts stay thin -------------------------

SEED_MAX = 2 ** 32 - 1      # numpy's legacy seeding (used by Keras) takes no larger seed
MAX_IMAGE_SIZE = 1024       # pixels per side of a generated or prepared image
MAX_EPOCHS = 10_000
MAX_BATCH_SIZE = 4096
MAX_DENSE_UNITS = 8192
MAX_FILTERS = 2048          # filters of one cnn conv block
MAX_CONV_BLOCKS = 10        # each halves the image: 2**10 = MAX_IMAGE_SIZE
MAX_SYNTHETIC_PER_CLASS = 100_000
MAX_N_ESTIMATORS = 10_000
LUNG_MASK_POLICIES = ("none", "crop", "mask")  # prepare.lung_mask: see lungdx.images
KAGGLE_HANDLE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*/[A-Za-z0-9][A-Za-z0-9_.-]*")

# Every key params.yaml may hold: a dict is a section, None a value. check_all refuses any other
# key, so a typo (models.cnn.dropuot) is an error instead of a silently used default.
_TRAINING = ("epochs", "batch_size", "learning_rate", "dropout", "patience", "warmup_epochs", "dense_units")
# models.<name>.augment: the largest value of each transformation, 0 (or false) for none.
AUGMENT_LIMITS = {"rotation": (45, "degrees, either way"), "shift": (0.5, "of the side, either way"),
                  "zoom": (0.5, "of the side, in or out"), "brightness": (1.0, "of the 0..255 range, either way"),
                  "contrast": (1.0, "as a factor, either way")}
_AUGMENT = {**dict.fromkeys(AUGMENT_LIMITS), "flip": None}
SCHEMA = {
    "seed": None,
    "dataset": {"source": None, "kaggle_handle": None, "kaggle_version": None, "classes": None,
                "synthetic": {"per_class": None, "image_size": None}},
    "sample": {"per_class": None, "val_size": None, "test_size": None},
    "prepare": {"image_size": None, "lung_mask": None},
    "baseline": {"image_size": None, "n_estimators": None},
    "gradcam": {"per_class": None, "layer": None},
    "external": "names",  # any names: see external_settings
    "model": None,
    "models": {
        "cnn": {**dict.fromkeys(_TRAINING + ("filters",)), "augment": _AUGMENT},
        "vgg19": {**dict.fromkeys(("weights",) + _TRAINING
                                  + ("fine_tune_blocks", "fine_tune_epochs", "fine_tune_learning_rate")),
                  "augment": _AUGMENT},
    },
}

# VGG19's conv layers per block, as keras.applications.VGG19 names them (block1_conv1 ... block5_conv4).
VGG19_CONVS_PER_BLOCK = (2, 2, 4, 4, 4)


class _Elided:
    def __repr__(self) -> str:
        return "{...}"


def check_keys(params: dict, schema: dict = SCHEMA, prefix: str = "") -> None:
    """Refuse any key params.yaml may not hold, at any level, suggesting the nearest allowed one."""
    for key, value in params.items():
        name = f"{prefix}{key}"
        if key not in schema:
            allowed = list(schema)
            near = difflib.get_close_matches(str(key), allowed, n=1, cutoff=0.6)
            where = prefix[:-1] or "params.yaml"
            hint = f"; did you mean {prefix}{near[0]}?" if near else ""
            raise ParamError(name, _Elided() if isinstance(value, dict) else value,
                             f"no such key{hint} ({where} takes: {', '.join(map(str, allowed))})")
        section = schema[key]
        if section == "names":
            continue  # a mapping of names the user chose, checked by its own settings function
        if isinstance(section, dict) and value is not None:  # an empty section: its keys are reported missing
            if not isinstance(value, dict):
                raise ParamError(name, value, f"a mapping of {', '.join(section)}")
            check_keys(value, section, name + ".")


def check_all(params: dict) -> dict:
    """Every stage's checks at once. `load` runs them, so whichever stage `dvc repro` starts
    first stops on a bad value anywhere in params.yaml, before any work.

    Both architectures' settings are checked whatever `model` is, so switching with
    `dvc exp run -S model=vgg19` cannot fail late; what ties a setting to the chosen model
    (the image size it needs, a local vgg19 weights file existing, gradcam.layer) is checked
    for the chosen model only.
    """
    check_keys(params)
    integer(params, "seed", minimum=0, maximum=SEED_MAX)
    dataset_settings(params)
    sample_settings(params)
    image_size = prepare_settings(params)["image_size"]
    baseline = baseline_settings(params)
    if baseline["image_size"] > image_size:
        raise ParamError("baseline.image_size", baseline["image_size"],
                         f"an integer from 4 to prepare.image_size (now {image_size})")
    gradcam = gradcam_settings(params)
    external_settings(params)
    cfg = model_settings(params)  # the chosen model first: its errors are the ones that matter now
    for arch in ARCHITECTURES:
        if arch != cfg["model"]:
            architecture_settings(params, arch)
    if gradcam["layer"] is not None:
        names = conv_layer_names(cfg["model"], cfg.get("filters"))
        if gradcam["layer"] not in names:
            near = difflib.get_close_matches(gradcam["layer"], names, n=1, cutoff=0.6)
            raise ParamError("gradcam.layer", gradcam["layer"],
                             "null (the last conv layer with a 16x16+ grid) or a conv layer of the "
                             f"{cfg['model']} model: {', '.join(names)}"
                             + (f"; did you mean {near[0]}?" if near else ""))
    return params


def conv_layer_names(arch: str, filters: list | None = None) -> list[str]:
    """The conv layers' names of the model lungdx.models builds, known without building it."""
    if arch == "cnn":
        return [f"conv{i}" for i in range(1, len(filters) + 1)]
    return [f"block{b}_conv{c}" for b, n in enumerate(VGG19_CONVS_PER_BLOCK, start=1) for c in range(1, n + 1)]


def seed(params: dict) -> int:
    """The one seed (params.yaml's `seed`)."""
    return integer(params, "seed", minimum=0, maximum=SEED_MAX)


def dataset_settings(params: dict) -> dict:
    """The dataset keys' forms; whether a dataset.source path exists is download's check."""
    source = get(params, "dataset.source", default=None)
    if source is not None and not (isinstance(source, str) and source.strip()):
        raise ParamError("dataset.source", source, "synthetic, kaggle, a local folder, a local .zip, "
                                                   "or an http(s) URL of a .zip")
    handle = get(params, "dataset.kaggle_handle", default=None if source != "kaggle" else _MISSING)
    if handle is not None and not (isinstance(handle, str) and KAGGLE_HANDLE.fullmatch(handle)):
        raise ParamError("dataset.kaggle_handle", handle,
                         "a Kaggle dataset handle owner/dataset, e.g. tawsifurrahman/covid19-radiography-database")
    version = get(params, "dataset.kaggle_version", default=None)
    if version is not None and (isinstance(version, bool) or not isinstance(version, numbers.Integral)
                                or version < 1):
        raise ParamError("dataset.kaggle_version", version, "a dataset version, an integer >= 1, or null (the latest)")
    # The synthetic keys are needed only for source: synthetic, but checked wherever they are set.
    per_class = get(params, "dataset.synthetic.per_class", default=_MISSING if source == "synthetic" else None)
    return {"source": source, "kaggle_handle": handle, "kaggle_version": version,
            "classes": string_list(params, "dataset.classes", default=[]),
            "synthetic": {
                "per_class": None if per_class is None else integer(
                    params, "dataset.synthetic.per_class", minimum=1, maximum=MAX_SYNTHETIC_PER_CLASS),
                "image_size": integer(params, "dataset.synthetic.image_size", minimum=32, default=256,
                                      maximum=MAX_IMAGE_SIZE)}}


def sample_settings(params: dict) -> dict:
    settings = {
        "seed": integer(params, "seed", minimum=0, maximum=SEED_MAX),
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
    return {"image_size": integer(params, "prepare.image_size", minimum=16, maximum=MAX_IMAGE_SIZE),
            "lung_mask": choice(params, "prepare.lung_mask", LUNG_MASK_POLICIES, default="none")}


def baseline_settings(params: dict) -> dict:
    return {"seed": integer(params, "seed", minimum=0, maximum=SEED_MAX),
            "image_size": integer(params, "baseline.image_size", minimum=4, maximum=MAX_IMAGE_SIZE),
            "n_estimators": integer(params, "baseline.n_estimators", minimum=1, maximum=MAX_N_ESTIMATORS)}


def gradcam_settings(params: dict) -> dict:
    layer = get(params, "gradcam.layer", default=None)
    if layer is not None and not (isinstance(layer, str) and layer):
        raise ParamError("gradcam.layer", layer, "null (the last conv layer) or a conv layer's name")
    return {"per_class": integer(params, "gradcam.per_class", minimum=1), "layer": layer}


EXTERNAL_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,63}")


def external_settings(params: dict) -> dict[str, str]:
    """external: {name: local folder or .zip}, the datasets the external stage scores the model on;
    the name names its metrics file (metrics/external/<name>.json) and its stage (external@<name>)."""
    value = get(params, "external", default=None)
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise ParamError("external", value, "a mapping of names to local folders or .zip files, e.g. "
                                            "{covid_masked: /data/cxr-covid-masked}, or {} for none")
    for name, source in value.items():
        if not (isinstance(name, str) and EXTERNAL_NAME.fullmatch(name)):
            raise ParamError(f"external.{name}", source, "a name of letters, digits, _ and - (it names "
                                                        "metrics/external/<name>.json)")
        if not isinstance(source, str) or not source.strip() or source.strip() in ("synthetic", "kaggle") \
                or "://" in source or source.startswith("kaggle:"):
            raise ParamError(f"external.{name}", source, "the path of a local folder or .zip file (in the Kaggle "
                                                        "or the flat layout; `lungdx external` also takes URLs "
                                                        "and kaggle:<owner>/<dataset>)")
        if source.strip().startswith("~"):
            raise ParamError(f"external.{name}", source, "an absolute path or one relative to the project: DVC takes "
                                                        "the path as a dependency as written, without expanding ~")
    return {name: source.strip() for name, source in value.items()}


# Shared by both architectures; each can override these under models.<name>.
MODEL_DEFAULTS = {"dropout": 0.3, "dense_units": 160, "patience": 10, "warmup_epochs": 0}
ARCHITECTURES = ("cnn", "vgg19")


def architecture_settings(params: dict, arch: str) -> dict:
    """The settings under models.<arch>, each checked for its type and range on its own.

    What ties them to the rest (the image size the network needs, a local weights file
    existing) is model_settings' check, for the chosen model only.
    """
    key = f"models.{arch}"
    if not isinstance(get(params, key, default={}), dict):
        raise ParamError(key, get(params, key), "a mapping of training settings (see the comments in params.yaml)")
    cfg = {
        "epochs": integer(params, f"{key}.epochs", minimum=1, maximum=MAX_EPOCHS),
        "batch_size": integer(params, f"{key}.batch_size", minimum=1, maximum=MAX_BATCH_SIZE),
        "learning_rate": positive(params, f"{key}.learning_rate"),
        "patience": integer(params, f"{key}.patience", minimum=1, maximum=MAX_EPOCHS,
                            default=MODEL_DEFAULTS["patience"]),
        "warmup_epochs": integer(params, f"{key}.warmup_epochs", minimum=0, maximum=MAX_EPOCHS,
                                 default=MODEL_DEFAULTS["warmup_epochs"]),
        "dense_units": integer(params, f"{key}.dense_units", minimum=1, maximum=MAX_DENSE_UNITS,
                               default=MODEL_DEFAULTS["dense_units"]),
        "dropout": get(params, f"{key}.dropout", default=MODEL_DEFAULTS["dropout"]),
    }
    if isinstance(cfg["dropout"], bool) or not isinstance(cfg["dropout"], numbers.Real) \
            or not 0 <= cfg["dropout"] < 1:
        raise ParamError(f"{key}.dropout", cfg["dropout"], "a number from 0 up to (not including) 1")
    if arch == "cnn":
        filters = get(params, f"{key}.filters", default=[16, 32, 64, 128, 256])
        if not isinstance(filters, list) or not 0 < len(filters) <= MAX_CONV_BLOCKS or not all(
                isinstance(f, int) and not isinstance(f, bool) and 0 < f <= MAX_FILTERS for f in filters):
            raise ParamError(f"{key}.filters", filters, f"a list of 1 to {MAX_CONV_BLOCKS} integers from 1 to "
                                                        f"{MAX_FILTERS}, the filters of each conv block")
        cfg["filters"] = filters
    else:
        cfg["weights"] = get(params, f"{key}.weights", default="imagenet")
        _check_vgg19_weights_form(cfg["weights"])
        cfg["fine_tune_blocks"] = integer(params, f"{key}.fine_tune_blocks", minimum=0, maximum=5, default=0)
        cfg["fine_tune_epochs"] = integer(params, f"{key}.fine_tune_epochs", minimum=1, maximum=MAX_EPOCHS,
                                          default=5)
        cfg["fine_tune_learning_rate"] = positive(params, f"{key}.fine_tune_learning_rate", default=1e-5)
    cfg["augment"] = augment_settings(params, arch)
    if arch == "vgg19" and any(cfg["augment"].values()) and not cfg["fine_tune_blocks"]:
        raise ParamError(f"{key}.augment", _Elided(), "all 0 (off) while fine_tune_blocks is 0: the head trains on "
                                                      "features computed once, which augmentation cannot change; "
                                                      "set models.vgg19.fine_tune_blocks > 0 to augment the images "
                                                      "of fine-tuning")
    return cfg


def augment_settings(params: dict, arch: str) -> dict:
    """models.<arch>.augment: each transformation's largest value (0: off), and flip (false: off)."""
    key = f"models.{arch}.augment"
    if get(params, key, default=None) is None:
        return {**dict.fromkeys(AUGMENT_LIMITS, 0.0), "flip": False}
    if not isinstance(get(params, key), dict):
        raise ParamError(key, get(params, key), "a mapping of " + ", ".join(_AUGMENT))
    settings = {}
    for name, (limit, unit) in AUGMENT_LIMITS.items():
        value = get(params, f"{key}.{name}", default=0)
        if isinstance(value, bool) or not isinstance(value, numbers.Real) or not 0 <= value <= limit:
            raise ParamError(f"{key}.{name}", value, f"a number from 0 (off) to {limit:g} ({unit})")
        settings[name] = float(value)
    settings["flip"] = get(params, f"{key}.flip", default=False)
    if not isinstance(settings["flip"], bool):
        raise ParamError(f"{key}.flip", settings["flip"], "true or false (a horizontal flip swaps the heart's side)")
    return settings


def model_settings(params: dict) -> dict:
    """Check `model` and `models.<model>` before any work."""
    arch = choice(params, "model", ARCHITECTURES)
    cfg = {"model": arch,
           "seed": integer(params, "seed", minimum=0, maximum=SEED_MAX),
           "image_size": integer(params, "prepare.image_size", minimum=16, maximum=MAX_IMAGE_SIZE),
           **architecture_settings(params, arch)}
    if arch == "cnn":
        if cfg["image_size"] < 2 ** len(cfg["filters"]):
            raise ParamError("prepare.image_size", cfg["image_size"],
                             f"at least {2 ** len(cfg['filters'])} for a cnn with {len(cfg['filters'])} poolings")
    else:
        if cfg["image_size"] < 32:
            raise ParamError("prepare.image_size", cfg["image_size"], "at least 32 for vgg19 (five 2x2 poolings)")
        # Only the chosen model's weights file must exist: a path on another machine does not stop a cnn run.
        cfg["weights"] = resolve_vgg19_weights(cfg["weights"])
    return cfg


WEIGHTS_FORMS = "imagenet, none, or the path of an existing .h5 file"


def _check_vgg19_weights_form(value) -> None:
    if value in (None, "none", "None", "imagenet"):
        return
    if not isinstance(value, str) or not value.strip() or Path(value).suffix != ".h5":
        raise ParamError("models.vgg19.weights", value, WEIGHTS_FORMS)


def resolve_vgg19_weights(value) -> str | None:
    """`imagenet` (Keras download, cached under KERAS_HOME), `none`, or a local .h5 path."""
    _check_vgg19_weights_form(value)
    if value in (None, "none", "None"):
        return None
    if value == "imagenet":
        return "imagenet"
    path = Path(str(value)).expanduser()
    if not path.is_file():
        raise ParamError("models.vgg19.weights", value,
                         f"{WEIGHTS_FORMS} ({path} " + ("is a folder)" if path.is_dir() else "does not exist)"))
    return str(path)
