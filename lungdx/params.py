"""params.yaml: the only module that reads it, and the checks of every value in it.

`load()` reads params.yaml, checks every key before any work and returns `Params`: one frozen
settings object per stage (`load().train`, `load().sample`, ...), each holding exactly what its
stage takes, typed. Stages pass their settings and their paths to the library explicitly; the
library never reads params.yaml and names no key of it. A setting knows its own key
(`settings.key("epochs")` -> "models.cnn.epochs"), for the few messages that must name it at run
time (a loss that diverges names the learning rate to lower).

Every value comes from params.yaml itself: a missing key is an error naming it, never a default
hidden in code. The checks refuse unknown keys (with the nearest known one), non-finite
numbers, and values beyond the ranges that work (docs/parameters.md), so a typo costs a
one-line message naming the key, the value and what is allowed, not a crash twenty minutes
into training.
"""

from __future__ import annotations

import copy
import dataclasses
import difflib
import math
import numbers
import re
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, TypeGuard

import yaml

from .errors import LungdxError, MissingParam, ParamError
from .limits import LUNG_MASK_POLICIES, MAX_IMAGE_SIZE, MIN_IMAGE_SIZE

if TYPE_CHECKING:
    from collections.abc import Sequence

PARAMS_FILE = "params.yaml"


class _Loader(yaml.SafeLoader):
    """YAML as DVC reads it: 3e-05 (no dot) is a number in YAML 1.2, which DVC follows and writes
    for `dvc exp run -S ...=3e-5`; PyYAML's YAML 1.1 rules would read it as text."""


_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float", re.compile(r"^[-+]?[0-9][0-9_]*(?:\.[0-9_]*)?[eE][-+]?[0-9]+$"), list("-+0123456789")
)


def read(path: str | Path = PARAMS_FILE) -> dict:
    """params.yaml as written, unchecked: a mapping, or a LungdxError naming the file."""
    path = Path(path)
    try:
        params = yaml.load(path.read_text(encoding="utf-8"), Loader=_Loader)
    except FileNotFoundError as exc:
        raise LungdxError(f"{path}: not found; run the stage from the project root (where dvc.yaml is)") from exc
    except (OSError, UnicodeDecodeError) as exc:
        raise LungdxError(f"{path}: cannot be read ({exc})") from exc
    except yaml.YAMLError as exc:
        raise LungdxError(f"{path}: not valid YAML: {exc}") from exc
    if not isinstance(params, dict):
        raise LungdxError(f"{path}: expected a mapping of parameters at the top level")
    return params


def load(path: str | Path = PARAMS_FILE) -> Params:
    """params.yaml, every key checked (see check), as one settings object per stage."""
    return check(read(path))


def with_changes(params: dict, changes: dict) -> dict:
    """A copy of `params` with dotted-key changes, as `dvc exp run -S key=value` makes them:
    with_changes(p, {"models.cnn.epochs": 2}). Each parent must exist as a mapping."""
    params = copy.deepcopy(params)
    for key, value in changes.items():
        *parents, last = key.split(".")
        if not all(key.split(".")):
            raise ParamError(key, value, "a key is names joined by dots, e.g. models.cnn.epochs")
        node = params
        for depth, part in enumerate(parents):
            child = node.get(part)
            if not isinstance(child, dict):
                raise ParamError(key, value, f"{'.'.join(parents[: depth + 1])} is not a group of params")
            node = child
        node[last] = value
    return params


# --- reading one value ---------------------------------------------------------------


def get(params: dict, key: str) -> Any:
    """Value at a dotted key, whatever YAML made of it; a missing key is a clear error (null is a value)."""
    node = params
    for part in key.split("."):
        if not isinstance(node, dict) or part not in node:
            raise MissingParam([key])
        node = node[part]
    return node


def _is_integer(value: object) -> TypeGuard[int]:
    """An integer of YAML's (Python's bool is one too, but YAML's true is no number)."""
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def _is_number(value: object) -> TypeGuard[float]:
    """A number of YAML's, integer or not (not a bool)."""
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


def integer(params: dict, key: str, minimum: int | None = None, maximum: int | None = None) -> int:
    value = get(params, key)
    if minimum is not None and maximum is not None:
        allowed = f"an integer from {minimum} to {maximum}"
    else:
        allowed = (
            "an integer"
            + (f" >= {minimum}" if minimum is not None else "")
            + (f" <= {maximum}" if maximum is not None else "")
        )
    if not _is_integer(value):
        raise ParamError(key, value, allowed)
    if (minimum is not None and value < minimum) or (maximum is not None and value > maximum):
        raise ParamError(key, value, allowed)
    return int(value)


def fraction(params: dict, key: str) -> float:
    """A number strictly between 0 and 1."""
    value = get(params, key)
    if not _is_number(value) or not 0 < value < 1:
        raise ParamError(key, value, "a number strictly between 0 and 1")
    return float(value)


def positive(params: dict, key: str) -> float:
    """A finite number > 0 (YAML's .inf and .nan are refused)."""
    value = get(params, key)
    if not _is_number(value) or not 0 < value < math.inf:
        raise ParamError(key, value, "a finite number > 0")
    return float(value)


def flag(params: dict, key: str) -> bool:
    value = get(params, key)
    if not isinstance(value, bool):
        raise ParamError(key, value, "true or false")
    return value


def choice(params: dict, key: str, allowed: Sequence[str]) -> str:
    value = get(params, key)
    if value not in allowed:
        raise ParamError(key, value, "one of " + ", ".join(map(str, allowed)))
    return value


def string_list(params: dict, key: str) -> tuple[str, ...]:
    """A list of class folder names (dataset.classes): no slashes, no leading dot, no space at
    either end, no two that differ only in case or spaces (lungdx.sample.loose_name)."""
    value = get(params, key)
    if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
        raise ParamError(key, value, "a list of class folder names, e.g. [COVID, Normal], or [] for all")
    for name in value:
        if "/" in name or "\\" in name or name.startswith("."):
            raise ParamError(
                key, value, f"a list of class folder names; {name!r} cannot be one (no slashes, no leading dot)"
            )
        if name != name.strip():
            raise ParamError(
                key,
                value,
                f"a list of class folder names without a space at either end, as {name.strip()!r}; if the "
                f"folder is named {name!r}, rename it (in the dataset's source) to {name.strip()!r}",
            )
    if len(set(value)) != len(value):
        raise ParamError(key, value, "a list without repeated names")
    import unicodedata  # here: string_list alone needs it

    loose: dict[str, str] = {}
    for name in value:
        same = loose.setdefault(" ".join(unicodedata.normalize("NFKC", name).split()).casefold(), name)
        if same != name:
            raise ParamError(
                key,
                value,
                f"a list of distinct classes; {same!r} and {name!r} differ only in case or spaces: keep "
                "the one that is the folder's name (if both folders exist, merge or rename them)",
            )
    return tuple(value)


# --- what params.yaml may hold --------------------------------------------------------

SEED_MAX = 2**32 - 1  # numpy's legacy seeding (used by Keras) takes no larger seed
MAX_EPOCHS = 10_000
MAX_BATCH_SIZE = 4096
MAX_DENSE_UNITS = 8192
MAX_FILTERS = 2048  # filters of one cnn conv block
MAX_CONV_BLOCKS = 10  # each halves the image: 2**10 = MAX_IMAGE_SIZE
MAX_SYNTHETIC_PER_CLASS = 100_000
MAX_N_ESTIMATORS = 10_000
KAGGLE_HANDLE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*/[A-Za-z0-9][A-Za-z0-9_.-]*")
EXTERNAL_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,63}")
ARCHITECTURES = ("cnn", "vgg19")
# VGG19's conv layers per block, as keras.applications.VGG19 names them (block1_conv1 ... block5_conv4).
VGG19_CONVS_PER_BLOCK = (2, 2, 4, 4, 4)

_TRAINING = (
    "epochs",
    "batch_size",
    "learning_rate",
    "lr_schedule",
    "dropout",
    "label_smoothing",
    "balanced_batches",
    "patience",
    "warmup_epochs",
    "dense_units",
)
LR_SCHEDULES = ("constant", "plateau", "cosine")  # lungdx.train.learning_rate_schedule
MAX_LABEL_SMOOTHING = 0.5
CNN_POOLINGS = ("flatten", "global_average")
# The original network's own keys: the lever keys beside filters (docs/models.md).
_CNN_ONLY = ("filters", "batch_norm", "pooling", "tta")
# models.<name>.augment: the largest value of each transformation, 0 (or false) for none.
AUGMENT_LIMITS = {
    "rotation": (45, "degrees, either way"),
    "shift": (0.5, "of the side, either way"),
    "zoom": (0.5, "of the side, in or out"),
    "brightness": (1.0, "of the 0..255 range, either way"),
    "contrast": (1.0, "as a factor, either way"),
}
_AUGMENT = {**dict.fromkeys(AUGMENT_LIMITS), "flip": None}
# Every key params.yaml holds: a dict is a section, None a value. check refuses any other key
# (a typo such as models.cnn.dropuot) and any missing one.
SCHEMA = {
    "seed": None,
    "dataset": {
        "source": None,
        "kaggle_handle": None,
        "kaggle_version": None,
        "classes": None,
        "synthetic": {"per_class": None, "image_size": None},
    },
    "sample": {"per_class": None, "val_size": None, "test_size": None},
    "prepare": {"image_size": None, "lung_mask": None},
    "segment": dict.fromkeys(
        (
            "train_source",
            "image_size",
            "epochs",
            "batch_size",
            "learning_rate",
            "patience",
            "filters",
            "max_train_images",
        )
    ),
    "baseline": {"image_size": None, "n_estimators": None},
    "gradcam": {"per_class": None, "layer": None},
    "external": "names",  # any names: see _external
    "model": None,
    "models": {
        "cnn": {**dict.fromkeys(_TRAINING + _CNN_ONLY), "augment": _AUGMENT},
        "vgg19": {
            **dict.fromkeys(
                ("weights",) + _TRAINING + ("fine_tune_blocks", "fine_tune_epochs", "fine_tune_learning_rate")
            ),
            "augment": _AUGMENT,
        },
    },
}


class _Elided:
    def __repr__(self) -> str:
        return "{...}"


def check_keys(params: dict, schema: dict = SCHEMA, prefix: str = "") -> None:
    """Refuse any key params.yaml may not hold, at any level, suggesting the nearest allowed one;
    then every key it must hold and does not, all of them at once."""
    missing = _check_keys(params, schema, prefix)
    if missing:
        raise MissingParam(missing)


def _check_keys(params: dict, schema: dict, prefix: str) -> list[str]:
    """check_keys' refusals; returns the missing keys (a missing section as itself)."""
    missing = []
    for key, value in params.items():
        name = f"{prefix}{key}"
        if key not in schema:
            allowed = list(schema)
            near = difflib.get_close_matches(str(key), allowed, n=1, cutoff=0.6)
            where = prefix[:-1] or "params.yaml"
            hint = f"; did you mean {prefix}{near[0]}?" if near else ""
            raise ParamError(
                name,
                _Elided() if isinstance(value, dict) else value,
                f"no such key{hint} ({where} takes: {', '.join(map(str, allowed))})",
            )
        section = schema[key]
        if isinstance(section, dict):
            if not isinstance(value, dict):
                raise ParamError(name, value, f"a mapping of {', '.join(section)}")
            missing += _check_keys(value, section, name + ".")
    return missing + [f"{prefix}{key}" for key in schema if key not in params]


# --- the settings of each stage ---------------------------------------------------------


class _Keyed:
    """A stage's settings: frozen, typed, and each field knowing its key in params.yaml."""

    KEYS: ClassVar[dict[str, str]] = {}

    def key(self, name: str) -> str:
        """The params.yaml key of field `name` (for a message that must name it)."""
        return self.KEYS[name]


@dataclass(frozen=True)
class DownloadSettings(_Keyed):
    seed: int
    source: str  # synthetic | kaggle | a local folder or .zip | an http(s) URL of a .zip
    kaggle_handle: str
    kaggle_version: int | None  # None: the latest
    synthetic_per_class: int
    synthetic_image_size: int
    KEYS: ClassVar[dict[str, str]] = {
        "seed": "seed",
        "source": "dataset.source",
        "kaggle_handle": "dataset.kaggle_handle",
        "kaggle_version": "dataset.kaggle_version",
        "synthetic_per_class": "dataset.synthetic.per_class",
        "synthetic_image_size": "dataset.synthetic.image_size",
    }


@dataclass(frozen=True)
class SampleSettings(_Keyed):
    seed: int
    classes: tuple[str, ...]  # () : every class folder, alphabetically
    per_class: int
    val_size: float
    test_size: float
    KEYS: ClassVar[dict[str, str]] = {
        "seed": "seed",
        "classes": "dataset.classes",
        "per_class": "sample.per_class",
        "val_size": "sample.val_size",
        "test_size": "sample.test_size",
    }


@dataclass(frozen=True)
class PrepareSettings(_Keyed):
    image_size: int
    lung_mask: str  # none | crop | mask (lungdx.images)
    KEYS: ClassVar[dict[str, str]] = {"image_size": "prepare.image_size", "lung_mask": "prepare.lung_mask"}


@dataclass(frozen=True)
class SegmentSettings(_Keyed):
    """What the segment stage takes: the U-Net's training, where its masks come from, and the
    split shares and lung focus it serves."""

    seed: int
    lung_mask: str  # prepare.lung_mask: none trains nothing
    train_source: str  # "": dataset.source's own masks; else a local folder or .zip with masks
    image_size: int
    epochs: int
    batch_size: int
    learning_rate: float
    patience: int
    filters: tuple[int, ...]
    max_train_images: int
    val_size: float  # sample's shares, for splitting a train_source
    test_size: float
    KEYS: ClassVar[dict[str, str]] = {
        "seed": "seed",
        "lung_mask": "prepare.lung_mask",
        "val_size": "sample.val_size",
        "test_size": "sample.test_size",
        **{
            name: f"segment.{name}"
            for name in (
                "train_source",
                "image_size",
                "epochs",
                "batch_size",
                "learning_rate",
                "patience",
                "filters",
                "max_train_images",
            )
        },
    }


@dataclass(frozen=True)
class BaselineSettings(_Keyed):
    seed: int
    image_size: int
    n_estimators: int
    KEYS: ClassVar[dict[str, str]] = {
        "seed": "seed",
        "image_size": "baseline.image_size",
        "n_estimators": "baseline.n_estimators",
    }


@dataclass(frozen=True)
class Augment:
    """models.<name>.augment: each transformation's largest value (0: off), and flip."""

    rotation: float
    shift: float
    zoom: float
    brightness: float
    contrast: float
    flip: bool

    def __bool__(self) -> bool:
        return any(dataclasses.astuple(self))


@dataclass(frozen=True)
class ModelSettings(_Keyed):
    """model and models.<model>: what features and train take. The fields of the other
    architecture are None (cnn: weights and fine_tune_*; vgg19: filters)."""

    architecture: str  # cnn | vgg19
    seed: int
    image_size: int  # prepare.image_size: the network's input
    epochs: int
    batch_size: int
    learning_rate: float
    dropout: float
    patience: int
    warmup_epochs: int
    dense_units: int
    augment: Augment
    filters: tuple[int, ...] | None = None
    weights: str | None = None  # vgg19: imagenet, None (random) or a local .h5's path
    fine_tune_blocks: int | None = None
    fine_tune_epochs: int | None = None
    fine_tune_learning_rate: float | None = None
    lr_schedule: str = "constant"  # constant | plateau | cosine
    label_smoothing: float = 0.0
    balanced_batches: bool = False  # each training batch draws the classes equally
    batch_norm: bool = False  # cnn: batch norm after each conv
    pooling: str = "flatten"  # cnn: flatten | global_average before the dense layers
    tta: bool = False  # cnn: average the outputs over the image and four shifted copies

    def key(self, name: str) -> str:
        if name not in {f.name for f in dataclasses.fields(self)}:
            raise KeyError(name)
        return {"architecture": "model", "seed": "seed", "image_size": "prepare.image_size"}.get(
            name, f"models.{self.architecture}.{name}"
        )


@dataclass(frozen=True)
class FeaturesSettings(_Keyed):
    """What the features stage takes: the chosen model, and for vgg19 the base's weights."""

    seed: int
    architecture: str  # cnn | vgg19
    weights: str | None  # vgg19: imagenet, None (random) or a local .h5's path; cnn: None
    KEYS: ClassVar[dict[str, str]] = {"seed": "seed", "architecture": "model", "weights": "models.vgg19.weights"}


@dataclass(frozen=True)
class EvaluateSettings(_Keyed):
    seed: int  # draws the bootstrap resamples of the intervals
    KEYS: ClassVar[dict[str, str]] = {"seed": "seed"}


@dataclass(frozen=True)
class GradcamSettings(_Keyed):
    seed: int
    per_class: int
    layer: str | None  # None: the last conv layer with a 16x16 grid or more
    KEYS: ClassVar[dict[str, str]] = {
        "seed": "seed",
        "per_class": "gradcam.per_class",
        "layer": "gradcam.layer",
        # what the report's "no lungs known" names: the keys that give the test images lungs
        "train_source": "segment.train_source",
        "lung_mask": "prepare.lung_mask",
    }


@dataclass(frozen=True)
class ExternalSettings(_Keyed):
    seed: int
    layer: str | None  # gradcam.layer
    sources: tuple[tuple[str, str], ...]  # external: (name, local folder or .zip), in params.yaml's order
    KEYS: ClassVar[dict[str, str]] = {"seed": "seed", "layer": "gradcam.layer", "sources": "external"}

    @property
    def names(self) -> list[str]:
        return [name for name, _ in self.sources]

    def source(self, name: str) -> str:
        """The source of external.<name>; an error listing the names there are."""
        if name not in self.names:
            raise LungdxError(
                f"params.yaml: external has no {name!r}: its names are {', '.join(self.names) or '(none)'}"
            )
        return dict(self.sources)[name]


@dataclass(frozen=True)
class Params:
    """params.yaml, checked: the settings of each stage."""

    seed: int
    download: DownloadSettings
    sample: SampleSettings
    prepare: PrepareSettings
    segment: SegmentSettings
    baseline: BaselineSettings
    features: FeaturesSettings
    train: ModelSettings  # the chosen model's
    evaluate: EvaluateSettings
    gradcam: GradcamSettings
    external: ExternalSettings


def check(params: dict) -> Params:
    """Every stage's checks at once, so whichever stage `dvc repro` starts first stops on a bad
    value anywhere in params.yaml, before any work.

    Both architectures' settings are checked whatever `model` is, so switching with
    `dvc exp run -S model=vgg19` cannot fail late; what ties a setting to the chosen model
    (the image size it needs, a local vgg19 weights file existing, gradcam.layer) is checked
    for the chosen model only.
    """
    check_keys(params)
    seed = integer(params, "seed", minimum=0, maximum=SEED_MAX)
    download = _download(params, seed)
    sample = _sample(params, seed)
    prepare = PrepareSettings(
        image_size=integer(params, "prepare.image_size", minimum=MIN_IMAGE_SIZE, maximum=MAX_IMAGE_SIZE),
        lung_mask=choice(params, "prepare.lung_mask", LUNG_MASK_POLICIES),
    )
    segment = _segment(params, seed, prepare.lung_mask, sample)
    baseline = BaselineSettings(
        seed,
        integer(params, "baseline.image_size", minimum=4, maximum=MAX_IMAGE_SIZE),
        integer(params, "baseline.n_estimators", minimum=1, maximum=MAX_N_ESTIMATORS),
    )
    if baseline.image_size > prepare.image_size:
        raise ParamError(
            "baseline.image_size",
            baseline.image_size,
            f"an integer from 4 to prepare.image_size (now {prepare.image_size})",
        )
    model = _chosen_model(params, seed, prepare.image_size)  # its errors are the ones that matter now
    for arch in ARCHITECTURES:
        if arch != model.architecture:
            _architecture(params, arch, seed, prepare.image_size)
    gradcam = GradcamSettings(seed, integer(params, "gradcam.per_class", minimum=1), _gradcam_layer(params, model))
    external = ExternalSettings(seed, gradcam.layer, _external(params))
    features = FeaturesSettings(seed, model.architecture, model.weights)
    return Params(
        seed, download, sample, prepare, segment, baseline, features, model, EvaluateSettings(seed), gradcam, external
    )


def conv_layer_names(arch: str, filters: Sequence[int] | None = None) -> list[str]:
    """The conv layers' names of the model lungdx.models builds, known without building it (a cnn's
    from its `filters`)."""
    if arch == "cnn":
        if filters is None:
            raise ValueError("a cnn's conv layers follow from its filters: give them")
        return [f"conv{i}" for i in range(1, len(filters) + 1)]
    return [f"block{b}_conv{c}" for b, n in enumerate(VGG19_CONVS_PER_BLOCK, start=1) for c in range(1, n + 1)]


def project_seed(path: str | Path = PARAMS_FILE) -> int | None:
    """The seed of params.yaml at `path` (checked alone), None where there is no such file."""
    if not Path(path).is_file():
        return None
    return integer(read(path), "seed", minimum=0, maximum=SEED_MAX)


def _download(params: dict, seed: int) -> DownloadSettings:
    """The dataset keys' forms; whether a dataset.source path exists is download's check."""
    source = get(params, "dataset.source")
    if not (isinstance(source, str) and source.strip()):
        raise ParamError(
            "dataset.source", source, "synthetic, kaggle, a local folder, a local .zip, or an http(s) URL of a .zip"
        )
    handle = get(params, "dataset.kaggle_handle")
    if not (isinstance(handle, str) and KAGGLE_HANDLE.fullmatch(handle)):
        raise ParamError(
            "dataset.kaggle_handle",
            handle,
            "a Kaggle dataset handle owner/dataset, e.g. tawsifurrahman/covid19-radiography-database",
        )
    version = get(params, "dataset.kaggle_version")
    if version is not None and (not _is_integer(version) or version < 1):
        raise ParamError("dataset.kaggle_version", version, "a dataset version, an integer >= 1, or null (the latest)")
    return DownloadSettings(
        seed,
        source.strip(),
        handle,
        None if version is None else int(version),
        integer(params, "dataset.synthetic.per_class", minimum=1, maximum=MAX_SYNTHETIC_PER_CLASS),
        integer(params, "dataset.synthetic.image_size", minimum=32, maximum=MAX_IMAGE_SIZE),
    )


def _sample(params: dict, seed: int) -> SampleSettings:
    settings = SampleSettings(
        seed,
        string_list(params, "dataset.classes"),
        integer(params, "sample.per_class", minimum=1),
        fraction(params, "sample.val_size"),
        fraction(params, "sample.test_size"),
    )
    if settings.val_size + settings.test_size >= 1:
        raise ParamError(
            "sample.val_size + sample.test_size",
            settings.val_size + settings.test_size,
            "a sum below 1, so that some images are left for training",
        )
    return settings


def _segment(params: dict, seed: int, lung_mask: str, sample: SampleSettings) -> SegmentSettings:
    """segment.*: the U-Net's settings; whether train_source exists and has masks is the stage's check."""
    source = _train_source(params)
    size = integer(params, "segment.image_size", minimum=MIN_IMAGE_SIZE, maximum=MAX_IMAGE_SIZE)
    filters = _unet_filters(params, size)  # checked before the training numbers, as a user reads the block
    return SegmentSettings(
        seed=seed,
        lung_mask=lung_mask,
        train_source=source,
        image_size=size,
        epochs=integer(params, "segment.epochs", minimum=1, maximum=MAX_EPOCHS),
        batch_size=integer(params, "segment.batch_size", minimum=1, maximum=MAX_BATCH_SIZE),
        learning_rate=positive(params, "segment.learning_rate"),
        patience=integer(params, "segment.patience", minimum=1, maximum=MAX_EPOCHS),
        filters=filters,
        max_train_images=integer(params, "segment.max_train_images", minimum=10),
        val_size=sample.val_size,
        test_size=sample.test_size,
    )


def _train_source(params: dict) -> str:
    """segment.train_source, stripped: "" (null too) for dataset.source's own masks, else a local path."""
    source = get(params, "segment.train_source")
    if source is None:
        source = ""
    if not isinstance(source, str) or source.strip() in ("synthetic", "kaggle") or source.strip().startswith("~"):
        raise ParamError(
            "segment.train_source",
            source,
            "empty (learn from dataset.source's own lung masks) or the "
            "path of a local folder or .zip with lung masks (the Kaggle "
            "layout's <Class>/images and <Class>/masks), written without ~",
        )
    return source.strip()


def _unet_filters(params: dict, size: int) -> tuple[int, ...]:
    """segment.filters, each U-Net level's, and that the U-Net can halve segment.image_size (`size`) as often."""
    filters = get(params, "segment.filters")
    if (
        not isinstance(filters, list)
        or not 2 <= len(filters) <= 6
        or not all(isinstance(f, int) and not isinstance(f, bool) and 0 < f <= MAX_FILTERS for f in filters)
    ):
        raise ParamError(
            "segment.filters",
            filters,
            f"a list of 2 to 6 integers from 1 to {MAX_FILTERS}: the filters "
            "of each U-Net level, the last the bottleneck",
        )
    if size % 2 ** (len(filters) - 1):
        raise ParamError(
            "segment.image_size",
            size,
            f"a multiple of {2 ** (len(filters) - 1)}: the U-Net halves it {len(filters) - 1} times (segment.filters)",
        )
    return tuple(filters)


def _gradcam_layer(params: dict, model: ModelSettings) -> str | None:
    layer = get(params, "gradcam.layer")
    if layer is None:
        return None
    if not (isinstance(layer, str) and layer):
        raise ParamError("gradcam.layer", layer, "null (the last conv layer) or a conv layer's name")
    names = conv_layer_names(model.architecture, model.filters)
    if layer not in names:
        near = difflib.get_close_matches(str(layer), names, n=1, cutoff=0.6)
        raise ParamError(
            "gradcam.layer",
            layer,
            "null (the last conv layer with a 16x16+ grid) or a conv layer of the "
            f"{model.architecture} model: {', '.join(names)}" + (f"; did you mean {near[0]}?" if near else ""),
        )
    return layer


def _external(params: dict) -> tuple[tuple[str, str], ...]:
    """external: {name: local folder or .zip}, the datasets the external stage scores the model on;
    the name names its metrics file (metrics/external/<name>.json) and its stage (external@<name>)."""
    value = get(params, "external")
    if not isinstance(value, dict):  # null too: dvc's foreach refuses it
        raise ParamError(
            "external",
            value,
            "a mapping of names to local folders or .zip files, e.g. "
            "{covid_masked: /data/cxr-covid-masked}, or {} for none",
        )
    for name, source in value.items():
        if not (isinstance(name, str) and EXTERNAL_NAME.fullmatch(name)):
            raise ParamError(
                f"external.{name}", source, "a name of letters, digits, _ and - (it names metrics/external/<name>.json)"
            )
        if (
            not isinstance(source, str)
            or not source.strip()
            or source.strip() in ("synthetic", "kaggle")
            or "://" in source
            or source.startswith("kaggle:")
        ):
            raise ParamError(
                f"external.{name}",
                source,
                "the path of a local folder or .zip file (in the Kaggle "
                "or the flat layout; `lungdx external` also takes URLs "
                "and kaggle:<owner>/<dataset>)",
            )
        if source.strip().startswith("~"):
            raise ParamError(
                f"external.{name}",
                source,
                "an absolute path or one relative to the project: DVC takes "
                "the path as a dependency as written, without expanding ~",
            )
    return tuple((name, source.strip()) for name, source in value.items())


def _augment(params: dict, arch: str) -> Augment:
    key = f"models.{arch}.augment"
    values = {}
    for name, (limit, unit) in AUGMENT_LIMITS.items():
        value = get(params, f"{key}.{name}")
        if not _is_number(value) or not 0 <= value <= limit:
            raise ParamError(f"{key}.{name}", value, f"a number from 0 (off) to {limit:g} ({unit})")
        values[name] = float(value)
    flip = get(params, f"{key}.flip")
    if not isinstance(flip, bool):
        raise ParamError(f"{key}.flip", flip, "true or false (a horizontal flip swaps the heart's side)")
    return Augment(**values, flip=flip)


def _architecture(params: dict, arch: str, seed: int, image_size: int) -> ModelSettings:
    """The settings under models.<arch>, each checked for its type and range on its own.

    What ties them to the rest (the image size the network needs, a local weights file
    existing) is _chosen_model's check, for the chosen model only.
    """
    common = _training(params, arch, seed, image_size)
    if arch == "cnn":
        return _cnn_levers(params, common)
    return _with_vgg19_weights(params, common)


def _training(params: dict, arch: str, seed: int, image_size: int) -> ModelSettings:
    """The settings both architectures have, checked; the other fields left None."""
    key = f"models.{arch}"
    dropout = get(params, f"{key}.dropout")
    if not _is_number(dropout) or not 0 <= dropout < 1:
        raise ParamError(f"{key}.dropout", dropout, "a number from 0 up to (not including) 1")
    return ModelSettings(
        architecture=arch,
        seed=seed,
        image_size=image_size,
        epochs=integer(params, f"{key}.epochs", minimum=1, maximum=MAX_EPOCHS),
        batch_size=integer(params, f"{key}.batch_size", minimum=1, maximum=MAX_BATCH_SIZE),
        learning_rate=positive(params, f"{key}.learning_rate"),
        dropout=float(dropout),
        patience=integer(params, f"{key}.patience", minimum=1, maximum=MAX_EPOCHS),
        warmup_epochs=integer(params, f"{key}.warmup_epochs", minimum=0, maximum=MAX_EPOCHS),
        dense_units=integer(params, f"{key}.dense_units", minimum=1, maximum=MAX_DENSE_UNITS),
        augment=_augment(params, arch),
        lr_schedule=choice(params, f"{key}.lr_schedule", LR_SCHEDULES),
        label_smoothing=_label_smoothing(params, f"{key}.label_smoothing"),
        balanced_batches=flag(params, f"{key}.balanced_batches"),
    )


def _label_smoothing(params: dict, key: str) -> float:
    value = get(params, key)
    if not _is_number(value) or not 0 <= value <= MAX_LABEL_SMOOTHING:
        raise ParamError(key, value, f"a number from 0 (off) to {MAX_LABEL_SMOOTHING:g}, e.g. 0.1")
    return float(value)


def _cnn_levers(params: dict, common: ModelSettings) -> ModelSettings:
    """`common` with the cnn's own keys: filters, batch norm, pooling and test-time augmentation."""
    key = "models.cnn"
    return dataclasses.replace(
        common,
        filters=_cnn_filters(params, f"{key}.filters"),
        batch_norm=flag(params, f"{key}.batch_norm"),
        pooling=choice(params, f"{key}.pooling", CNN_POOLINGS),
        tta=flag(params, f"{key}.tta"),
    )


def _cnn_filters(params: dict, key: str) -> tuple[int, ...]:
    """models.cnn.filters: the filters of each conv block."""
    filters = get(params, key)
    if (
        not isinstance(filters, list)
        or not 0 < len(filters) <= MAX_CONV_BLOCKS
        or not all(isinstance(f, int) and not isinstance(f, bool) and 0 < f <= MAX_FILTERS for f in filters)
    ):
        raise ParamError(
            key,
            filters,
            f"a list of 1 to {MAX_CONV_BLOCKS} integers from 1 to {MAX_FILTERS}, the filters of each conv block",
        )
    return tuple(filters)


def _with_vgg19_weights(params: dict, common: ModelSettings) -> ModelSettings:
    """`common` with vgg19's own settings: the base's weights (their form) and its fine-tuning."""
    key = f"models.{common.architecture}"
    weights = get(params, f"{key}.weights")
    _check_vgg19_weights_form(weights)
    settings = dataclasses.replace(
        common,
        weights=weights,
        fine_tune_blocks=integer(params, f"{key}.fine_tune_blocks", minimum=0, maximum=len(VGG19_CONVS_PER_BLOCK)),
        fine_tune_epochs=integer(params, f"{key}.fine_tune_epochs", minimum=1, maximum=MAX_EPOCHS),
        fine_tune_learning_rate=positive(params, f"{key}.fine_tune_learning_rate"),
    )
    if settings.augment and not settings.fine_tune_blocks:
        raise ParamError(
            f"{key}.augment",
            _Elided(),
            "all 0 (off) while fine_tune_blocks is 0: the head trains on "
            "features computed once, which augmentation cannot change; "
            "set models.vgg19.fine_tune_blocks > 0 to augment the images "
            "of fine-tuning",
        )
    return settings


def _chosen_model(params: dict, seed: int, image_size: int) -> ModelSettings:
    """`model` and models.<model>, with what ties them to the data and the machine."""
    arch = choice(params, "model", ARCHITECTURES)
    settings = _architecture(params, arch, seed, image_size)
    if arch == "cnn":
        poolings = len(settings.filters or ())  # a cnn's settings always hold its filters
        if image_size < 2**poolings:
            raise ParamError(
                "prepare.image_size", image_size, f"at least {2**poolings} for a cnn with {poolings} poolings"
            )
        return settings
    if image_size < 32:
        raise ParamError("prepare.image_size", image_size, "at least 32 for vgg19 (five 2x2 poolings)")
    # Only the chosen model's weights file must exist: a path on another machine does not stop a cnn run.
    return dataclasses.replace(settings, weights=resolve_vgg19_weights(settings.weights))


WEIGHTS_FORMS = "imagenet, none, or the path of an existing .h5 file"


def _check_vgg19_weights_form(value: object) -> None:
    if value in (None, "none", "None", "imagenet"):
        return
    if not isinstance(value, str) or not value.strip() or Path(value).suffix != ".h5":
        raise ParamError("models.vgg19.weights", value, WEIGHTS_FORMS)


def resolve_vgg19_weights(value: object) -> str | None:
    """`imagenet` (Keras download, cached under KERAS_HOME), `none` (None), or a local .h5 path."""
    _check_vgg19_weights_form(value)
    if value in (None, "none", "None"):
        return None
    if value == "imagenet":
        return "imagenet"
    path = Path(str(value)).expanduser()
    if not path.is_file():
        raise ParamError(
            "models.vgg19.weights",
            value,
            f"{WEIGHTS_FORMS} ({path} " + ("is a folder)" if path.is_dir() else "does not exist)"),
        )
    return str(path)
