"""The model file: one `.keras` that carries everything predicting needs.

Keras saves a `.keras` file as a zip (config.json, metadata.json, model.weights.h5).
We add one entry, `lungdx.json`, with the class names in output order, the input size
and how an image file becomes the model's input, so that the file alone -- copied, or
fetched with `dvc artifacts get` -- is enough to predict. Keras ignores the entry.

A model file may come from anywhere, so reading one is guarded: only a regular file is opened
(never a pipe or device), its zip may declare only what a model needs (entries, sizes,
compression; MODEL_ZIP_LIMITS) before Keras or we read a member, and every field of lungdx.json
is checked for type, range and printable text before it is used or shown.
"""

from __future__ import annotations

import errno
import json
import os
import stat
import zipfile
import zlib
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn, TypeGuard

from .atomic import atomic_path
from .console import import_tensorflow
from .errors import LungdxError
from .images import PREPROCESSING, PREPROCESSING_STEPS
from .limits import LUNG_MASK_POLICIES, MAX_IMAGE_SIZE, MIN_IMAGE_SIZE
from .source_checks import NONBLOCK, ZipLimits, check_entry_count, check_zip_limits, file_kind

if TYPE_CHECKING:
    from collections.abc import Callable

    import keras

INFO_ENTRY = "lungdx.json"


SEGMENTER_ENTRY = "lungdx_segmenter.keras"


# one idea: the model file and its metadata, written at once
def save_model(
    model: keras.Model,
    path: str | Path,
    classes: list[str],
    image_size: int,
    architecture: str,
    lung_mask: str,
    segmenter: tuple[Path, dict] | None = None,
    tta: bool = False,
) -> dict:
    """Save `model` with its lungdx metadata to `path`, atomically; returns the metadata.
    lung_mask: how its training images were cut to the lungs (prepare.lung_mask), which
    predicting must repeat. segmenter: (its .keras file, what it is) for a crop or mask model,
    carried inside the file as SEGMENTER_ENTRY, so that the file alone finds an X-ray's lungs.
    tta: its probabilities are the mean over each image and shifted copies (arrays.predict)."""
    from . import __version__

    info = {
        "classes": list(classes),
        "image_size": int(image_size),
        "architecture": architecture,
        "input": {
            "channels": 1,
            "dtype": "float32",
            "range": [0, 255],
            "preprocessing": PREPROCESSING,
            "steps": PREPROCESSING_STEPS,
            "lung_mask": lung_mask,
        },
        "segmenter": None,
        "tta": bool(tta),
        "lungdx_version": __version__,
    }
    extra = {}
    if segmenter is not None:
        about = dict(segmenter[1])
        if not _text(about.get("learned_from", "")):  # a path with a control character, or too long
            about["learned_from"] = ascii(str(about.get("learned_from", "")))[:MAX_TEXT]
        info["segmenter"] = {"entry": SEGMENTER_ENTRY, **about}
        extra[SEGMENTER_ENTRY] = Path(segmenter[0]).read_bytes()
    extra[INFO_ENTRY] = (json.dumps(info, indent=2) + "\n").encode()
    save_reproducibly(model, path, extra)
    return info


def save_reproducibly(model: keras.Model, path: str | Path, extra: dict[str, bytes] | None = None) -> None:
    """model.save to `path`, atomically, rewritten so the file depends on the model alone (below)."""
    with atomic_path(path, suffix=".keras") as tmp:
        model.save(tmp)
        _rewrite_reproducibly(tmp, extra or {})


# Every member of a model file gets this time, as Keras gives its JSON members: the file is then
# a function of the model, not of when it was saved (DVC, dvc.lock and a reader's md5 all see it).
ZIP_TIME = (1980, 1, 1, 0, 0, 0)


def _numbered_shared_objects(config: Any) -> Any:
    """Keras's config with each `shared_object_id` (Keras writes the object's memory address, which
    differs on every run) replaced by 1, 2, ... in order of first appearance: the same objects stay
    shared when Keras loads it, and the file no longer depends on where Python put them."""
    numbers: dict = {}

    def renumber(node: Any) -> Any:
        if isinstance(node, dict):
            return {
                key: numbers.setdefault(value, len(numbers) + 1) if key == "shared_object_id" else renumber(value)
                for key, value in node.items()
            }
        if isinstance(node, list):
            return [renumber(item) for item in node]
        return node

    return renumber(config)


def _rewrite_reproducibly(keras_file: Path, extra: dict[str, bytes]) -> None:
    """Rewrite the zip Keras saved at `keras_file` (still a temporary) with `extra` members added:
    every member at ZIP_TIME, stored (as Keras stores them), as a Unix file rw-r--r--, Keras's save
    date left out of its metadata.json and its memory addresses out of config.json. The weights'
    HDF5 records no times (h5py creates objects without them)."""
    with zipfile.ZipFile(keras_file) as saved:
        members = {info.filename: saved.read(info) for info in saved.infolist()}
    metadata = json.loads(members["metadata.json"])
    metadata.pop("date_saved", None)
    members["metadata.json"] = json.dumps(metadata).encode()
    members["config.json"] = json.dumps(_numbered_shared_objects(json.loads(members["config.json"]))).encode()
    with zipfile.ZipFile(keras_file, "w") as archive:
        for name, data in {**members, **extra}.items():
            entry = zipfile.ZipInfo(name, date_time=ZIP_TIME)
            entry.create_system, entry.external_attr = 3, 0o644 << 16  # a Unix file, rw-r--r--
            archive.writestr(entry, data, compress_type=zipfile.ZIP_STORED)


RETRAIN = "check where it came from; retrain with dvc repro -f train, or fetch the model again"
# Members read whole into memory and parsed as JSON (lungdx.json by read_info, the others by
# Keras), with caps far above what lungdx writes: lungdx.json holds class names and a few
# settings (~600 bytes); config.json describes the layers (VGG19's is ~50 KB).
JSON_CAPS = {INFO_ENTRY: 1 << 20, "metadata.json": 1 << 20, "config.json": 64 << 20}
# What a model file's zip may declare, checked before anything is read from it. A lungdx file
# holds 4 members, stored uncompressed as Keras writes them; the largest, VGG19's weights, is
# ~80 MB. Keras reads the weights whole into memory, so a member that declares far more than
# it stores would cost memory (and time) that the file's own size does not show.
MODEL_ZIP_LIMITS = ZipLimits(
    max_entries=1000,  # 4, or a few more with a custom layer's assets
    max_entry_bytes=2 << 30,
    max_total_bytes=2 << 30,  # 25 times VGG19's weights
    max_ratio=20.0,
    ratio_from_bytes=1 << 20,  # stored: 1; even deflated, weights ~1.3, JSON ~11
    usual_entries="a lungdx model file has 4",
    usual_entry="VGG19's weights are about 80 MB",
    usual_ratio="Keras stores members uncompressed",
    todo=RETRAIN,
)
# zipfile reads and parses the central directory whole when it opens a zip: this is room for
# 1000 entries with names of ~1 KB, checked first, so 300,000 tiny entries cost no time.
MAX_DIRECTORY_BYTES = 1 << 20
MAX_TEXT = 1000  # characters of any text in lungdx.json (the longest, input.steps, has ~300)


def read_info(path: str | Path) -> dict:
    """The lungdx metadata of a model file, checked, without loading the network: the fields
    lungdx knows, each of the right type and range (unknown ones are left out)."""
    path = Path(path)
    with _open_regular(path) as file:
        try:
            raw, names = _read_info_entry(path, file)
        except KeyError as exc:
            raise LungdxError(
                f"{path}: a Keras file without lungdx's {INFO_ENTRY} (class names, input size); "
                "models saved by lungdx carry it: retrain with dvc repro -f train"
            ) from exc
        # what zipfile raises for a damaged zip, zlib for damaged data, and zipfile for a member
        # it cannot read: NotImplementedError (an unknown compression), RuntimeError (encrypted)
        except (zipfile.BadZipFile, OSError, EOFError, zlib.error, NotImplementedError, RuntimeError) as exc:
            raise LungdxError(
                f"{path}: not a readable .keras model file ({exc}); retrain it with dvc repro -f train"
            ) from exc
    try:
        info = json.loads(raw)
    except RecursionError:
        _damaged(path, "nested too deeply")
    except ValueError as exc:  # also bytes that are not UTF-8, and integers of thousands of digits
        _damaged(path, f"not JSON: {exc}" if isinstance(exc, json.JSONDecodeError) else "not JSON")
    checked = _checked_info(path, info)
    if checked["segmenter"] is not None and SEGMENTER_ENTRY not in names:
        raise LungdxError(
            f"{path}: its {INFO_ENTRY} names a lung segmenter, but the file holds no {SEGMENTER_ENTRY}; {RETRAIN}"
        )
    return checked


def _open_regular(path: Path):
    """`path` opened for reading (binary); one clear line unless it is a regular file. Looked at
    before opening, so a named pipe is never opened (that would wait for a writer), and again
    once opened (without blocking), in case something else was put there in between."""
    try:
        st = os.stat(path)
    except FileNotFoundError as exc:
        if os.path.islink(path):
            raise LungdxError(
                f"{path}: a symbolic link to {os.readlink(path)}, which does not exist; give the model file itself"
            ) from exc
        raise LungdxError(
            f"{path}: not found; train a model first (dvc repro train), or fetch one with "
            "dvc artifacts get REPO lung-xray-classifier"
        ) from exc
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise LungdxError(
                f"{path}: a symbolic link loop (following it leads back to itself); give the model file itself"
            ) from exc
        raise LungdxError(f"{path}: could not be read ({exc.strerror})") from exc
    if stat.S_ISDIR(st.st_mode):
        raise LungdxError(f"{path}: is a folder; give the model file itself, e.g. {path / 'model.keras'}")
    if stat.S_ISREG(st.st_mode):
        try:
            file = os.fdopen(os.open(path, os.O_RDONLY | NONBLOCK), "rb")
        except OSError as exc:
            raise LungdxError(f"{path}: could not be read ({exc.strerror})") from exc
        st = os.fstat(file.fileno())
        if stat.S_ISREG(st.st_mode):
            return file
        file.close()
    raise LungdxError(
        f"{path}: a {file_kind(st.st_mode)}, not a regular file; give the model file itself "
        "(a .keras file saved by lungdx)"
    )


# zipfile itself, for the private names of its end-record finder, which typeshed does not declare
_ZIPFILE: Any = zipfile


def _read_info_entry(path: Path, file) -> tuple[bytes, set[str]]:
    """The bytes of lungdx.json, once what the zip declares is within MODEL_ZIP_LIMITS, and the
    names of the zip's entries."""
    shown = str(path)
    # zipfile's own (private) finder of the end record: the very sizes ZipFile will then use
    end = _ZIPFILE._EndRecData(file)
    if end:
        check_entry_count(shown, end[_ZIPFILE._ECD_ENTRIES_TOTAL], MODEL_ZIP_LIMITS)
        if end[_ZIPFILE._ECD_SIZE] > MAX_DIRECTORY_BYTES:
            raise LungdxError(
                f"{path}: its zip directory declares {end[_ZIPFILE._ECD_SIZE]:,} bytes, more than "
                f"the {MAX_DIRECTORY_BYTES:,} that {MODEL_ZIP_LIMITS.max_entries:,} entries need: "
                f"refusing a possible zip bomb before reading it; {RETRAIN}"
            )
    with zipfile.ZipFile(file) as archive:
        infos = archive.infolist()
        check_entry_count(shown, len(infos), MODEL_ZIP_LIMITS)  # the end record may understate them
        for entry in infos:
            cap = JSON_CAPS.get(entry.filename)
            if cap is not None and entry.file_size > cap:
                raise LungdxError(
                    f"{path}: its {entry.filename} declares {entry.file_size} bytes, more than "
                    f"{cap}: not a lungdx model file; {RETRAIN}"
                )
        check_zip_limits(shown, os.fstat(file.fileno()).st_size, infos, MODEL_ZIP_LIMITS)
        return archive.read(INFO_ENTRY), {entry.filename for entry in infos}


def _damaged(path: Path, what: str) -> NoReturn:
    raise LungdxError(f"{path}: its {INFO_ENTRY} is damaged ({what}); retrain with dvc repro -f train")


def _text(value: object) -> TypeGuard[str]:
    """Text that prints as one plain line: no control characters, since a line break or a
    terminal escape in, say, a class name would forge lines of `lungdx info` or predict's table."""
    return isinstance(value, str) and len(value) <= MAX_TEXT and value.isprintable()


def _integer(value: object) -> TypeGuard[int]:
    return isinstance(value, int) and not isinstance(value, bool)


def _pixel_value(value: object) -> TypeGuard[int | float]:
    """A number a pixel could take (NaN and infinities fail the comparison)."""
    return isinstance(value, (int, float)) and not isinstance(value, bool) and -1e6 <= value <= 1e6


def _value_range(value: object) -> bool:
    """Two numbers a pixel could take, the lowest first, such as [0, 255]."""
    return isinstance(value, list) and len(value) == 2 and all(map(_pixel_value, value)) and value[0] < value[1]


def _checked_info(path: Path, info: object) -> dict:
    """The fields of a parsed lungdx.json that lungdx uses, each checked; a LungdxError naming
    the file and the field otherwise."""

    def bad(what: str) -> NoReturn:
        _damaged(path, what)

    if not isinstance(info, dict):
        bad("not a JSON object")
    classes = _checked_classes(info.get("classes"), bad)
    size = info.get("image_size")
    if not (_integer(size) and MIN_IMAGE_SIZE <= size <= MAX_IMAGE_SIZE):
        bad(f"image_size must be an integer from {MIN_IMAGE_SIZE} to {MAX_IMAGE_SIZE}")
    architecture = info.get("architecture")
    if not (_text(architecture) and architecture):
        bad("architecture must be a model name such as cnn or vgg19")
    version = info.get("lungdx_version", "unknown")
    if not _text(version):
        bad("lungdx_version must be a version such as 1.0.0")
    return {
        "classes": classes,
        "image_size": size,
        "architecture": architecture,
        "input": _checked_input(path, info.get("input"), version, bad),
        "segmenter": _checked_segmenter(info.get("segmenter"), bad),
        "tta": _checked_tta(info.get("tta", False), bad),  # absent from files saved before models.cnn.tta
        "lungdx_version": version,
    }


def _checked_tta(tta: object, bad: Callable[[str], NoReturn]) -> bool:
    if not isinstance(tta, bool):
        bad("tta must be true or false")
    return tta


def _checked_classes(classes: object, bad: Callable[[str], NoReturn]) -> list[str]:
    """lungdx.json's classes: at least two distinct names, each one plain line."""
    if not (
        isinstance(classes, list)
        and len(classes) >= 2
        and all(isinstance(c, str) and c for c in classes)
        and len(set(classes)) == len(classes)
    ):
        bad("classes must be a list of at least two distinct names")
    for name in classes:
        if not _text(name):
            bad(f"class name {name[:60]!r} has control characters or over {MAX_TEXT} characters")
    return classes


def _checked_input(path: Path, pixels: object, version: str, bad: Callable[[str], NoReturn]) -> dict:
    """lungdx.json's input (how an image file becomes the model's input), checked; a model made
    for another preprocessing is refused naming the lungdx `version` that saved it."""
    if not isinstance(pixels, dict):
        bad("input must be a JSON object")
    preprocessing = pixels.get("preprocessing")
    if not _text(preprocessing):
        bad("input.preprocessing must be the name of how images are prepared")
    if preprocessing != PREPROCESSING:
        raise LungdxError(
            f"{path}: made for input preprocessing {preprocessing!r}, but this lungdx prepares "
            f"images as {PREPROCESSING!r}; use the lungdx version that saved it ({version})"
        )
    channels = pixels.get("channels", 1)  # absent from the first files lungdx saved
    if not (_integer(channels) and channels == 1):
        bad(f"input.channels must be 1: {PREPROCESSING} makes gray images")
    dtype = pixels.get("dtype", "float32")
    if not (_text(dtype) and dtype):
        bad("input.dtype must be a type name such as float32")
    value_range = pixels.get("range", [0, 255])
    if not _value_range(value_range):
        bad("input.range must be two numbers, the lowest first, such as [0, 255]")
    steps = pixels.get("steps", "")
    if not _text(steps):
        bad("input.steps must be one line of text")
    lung_mask = pixels.get("lung_mask", "none")  # absent from files saved before prepare.lung_mask
    if lung_mask not in LUNG_MASK_POLICIES:
        bad(f"input.lung_mask must be one of {', '.join(LUNG_MASK_POLICIES)}")
    return {
        "channels": channels,
        "dtype": dtype,
        "range": value_range,
        "preprocessing": preprocessing,
        "steps": steps,
        "lung_mask": lung_mask,
    }


def _checked_segmenter(segmenter: object, bad: Callable[[str], NoReturn]) -> dict | None:
    """lungdx.json's segmenter (what the carried lung segmenter is), checked; None without one."""
    if segmenter is None:
        return None
    if not isinstance(segmenter, dict) or segmenter.get("entry") != SEGMENTER_ENTRY:
        bad(f"segmenter must be a JSON object naming its entry {SEGMENTER_ENTRY}")
    size = segmenter.get("image_size")
    if not (_integer(size) and MIN_IMAGE_SIZE <= size <= MAX_IMAGE_SIZE):
        bad(f"segmenter.image_size must be an integer from {MIN_IMAGE_SIZE} to {MAX_IMAGE_SIZE}")
    learned_from = segmenter.get("learned_from", "")
    if not _text(learned_from):
        bad("segmenter.learned_from must be one line of text")
    dice = segmenter.get("test_dice")
    if dice is not None and not (_pixel_value(dice) and 0 <= dice <= 1):
        bad("segmenter.test_dice must be a number from 0 to 1")
    return {"entry": SEGMENTER_ENTRY, "image_size": size, "learned_from": learned_from, "test_dice": dice}


def load_segmenter(path: str | Path, info: dict) -> keras.Model:
    """The lung segmenter a model file carries (read_info(path)["segmenter"] says it does), loaded;
    the segmenter's file is taken out of the zip into a temporary file that Keras reads."""
    import tempfile

    with _open_regular(Path(path)) as file, zipfile.ZipFile(file) as archive:
        try:
            data = archive.read(SEGMENTER_ENTRY)
        except (KeyError, zipfile.BadZipFile, OSError, zlib.error) as exc:
            raise LungdxError(
                f"{path}: its lungdx.json names a lung segmenter but the file does not hold one "
                f"readable ({exc}); {RETRAIN}"
            ) from exc
    with tempfile.TemporaryDirectory(prefix="lungdx-segmenter-") as folder:
        member = Path(folder) / SEGMENTER_ENTRY
        member.write_bytes(data)
        try:
            segmenter = load_segmenter_file(member)
        except LungdxError as exc:
            raise LungdxError(
                f"{path}: the lung segmenter it carries is damaged ({SEGMENTER_ENTRY} cannot be loaded); {RETRAIN}"
            ) from exc
    expected = (info["segmenter"]["image_size"],) * 2 + (1,)
    if tuple(segmenter.input_shape[1:]) != expected or tuple(segmenter.output_shape[1:]) != expected:
        raise LungdxError(
            f"{path}: its lung segmenter maps {tuple(segmenter.input_shape[1:])} to "
            f"{tuple(segmenter.output_shape[1:])}, not {expected} to one lung probability per pixel "
            f"as its lungdx.json says; {RETRAIN}"
        )
    return segmenter


def load_model(path: str | Path) -> tuple[keras.Model, dict]:
    """(Keras model, lungdx metadata) of a model file saved by save_model; the two must agree."""
    info = read_info(path)  # before importing Keras: a wrong path costs no TensorFlow start-up
    import_tensorflow()  # the first TensorFlow call of evaluating, Grad-CAM and predicting: quietly
    import keras

    from . import layers  # noqa: F401  registers lungdx's own layers, which a model file may hold

    try:
        model = keras.models.load_model(path)
    # What Keras raises for a damaged or foreign file (a bad archive, JSON or HDF5, a missing
    # entry, a config it cannot build); anything else is a bug and keeps its traceback.
    except (ValueError, TypeError, KeyError, OSError, EOFError, RecursionError, zipfile.BadZipFile, zlib.error) as exc:
        raise LungdxError(
            f"{path}: could not be loaded ({type(exc).__name__}: {exc}); retrain it with dvc repro -f train"
        ) from exc
    expected_input = (None, info["image_size"], info["image_size"], 1)
    if tuple(model.input_shape) != expected_input or model.output_shape[-1] != len(info["classes"]):
        raise LungdxError(
            f"{path}: its network takes {tuple(model.input_shape)[1:]} and gives "
            f"{model.output_shape[-1]} outputs, but its {INFO_ENTRY} says "
            f"{expected_input[1:]} and {len(info['classes'])} classes; retrain with dvc repro -f train"
        )
    return model, info


def load_segmenter_file(path: str | Path) -> keras.Model:
    """The lung segmenter at `path` (the segment stage's .keras file), uncompiled: it only predicts."""
    import_tensorflow()
    import keras

    try:
        return keras.models.load_model(path, compile=False)
    except (ValueError, TypeError, KeyError, OSError, EOFError, RecursionError, zipfile.BadZipFile, zlib.error) as exc:
        raise LungdxError(
            f"{path}: the lung segmenter could not be loaded ({type(exc).__name__}: {exc}); "
            "retrain it with dvc repro -f segment"
        ) from exc
