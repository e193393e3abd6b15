"""A model file may come from anywhere: a hostile one gets exit 2 and one `error:` line naming it,
quickly and without big memory; a model that lungdx saved still loads and is shown."""

import json
import os
import re
import struct
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest

from lungdx.errors import LungdxError
from tests.helpers import ROOT, write_image

# The child runs `lungdx ARGS`, then prints its peak resident memory (Linux's VmHWM, in KiB: unlike
# getrusage's ru_maxrss it does not count the parent's memory at fork) and how long the command
# took, so interpreter start-up on a busy machine does not count.
CHILD = (
    "import sys, time; from lungdx.cli import main; start = time.monotonic(); rc = main(sys.argv[1:]); "
    "peak = next(line.split()[1] for line in open('/proc/self/status') if line.startswith('VmHWM:')); "
    "print(peak, time.monotonic() - start); sys.exit(rc)"
)


def lungdx(*args) -> tuple[subprocess.CompletedProcess, int, float]:
    """(the finished process, its peak memory in bytes, seconds) of `lungdx ARGS` in a fresh process."""
    env = {**os.environ, "PYTHONPATH": str(ROOT), "LUNGDX_PROGRESS": "0"}
    proc = subprocess.run(
        [sys.executable, "-c", CHILD, *map(str, args)], env=env, capture_output=True, text=True, timeout=120
    )
    peak_kib, seconds = proc.stdout.split()[-2:]
    return proc, int(peak_kib) * 1024, float(seconds)


def assert_one_error_line(stderr: str, path: Path, says: str) -> None:
    lines = stderr.strip().splitlines()
    assert len(lines) == 1, stderr
    assert lines[0].startswith(f"error: {path}: ") and says in lines[0], lines[0]


def copy_with(src: Path, dest: Path, replace: dict[str, bytes], compression=zipfile.ZIP_STORED) -> Path:
    """A copy of model file `src` whose members named in `replace` get new contents."""
    with zipfile.ZipFile(src) as old, zipfile.ZipFile(dest, "w", compression) as new:
        for name in old.namelist():
            if name not in replace:
                new.writestr(name, old.read(name))
        for name, data in replace.items():
            new.writestr(name, data)
    return dest


def real_info(tiny_run) -> dict:
    with zipfile.ZipFile(tiny_run / "models" / "model.keras") as archive:
        return json.loads(archive.read("lungdx.json"))


def input_with(info, **changes):
    return {**info, "input": {**info["input"], **changes}}


# lungdx.json made from the real one -> what the refusal says
DAMAGED = {
    "nested 5000 deep": (lambda info: "[" * 5000 + "]" * 5000, "nested too deeply"),
    "a 5000-digit number": (lambda info: '{"image_size": ' + "9" * 5000 + "}", "damaged (not JSON)"),
    "input.range a number": (lambda info: input_with(info, range=5), "input.range must be two numbers"),
    "input.range with NaN": (lambda info: input_with(info, range=[float("nan"), 255]), "input.range must be"),
    "input.range reversed": (lambda info: input_with(info, range=[255, 0]), "input.range must be"),
    "input null": (lambda info: {**info, "input": None}, "input must be a JSON object"),
    "input.channels 3": (lambda info: input_with(info, channels=3), "input.channels must be 1"),
    "input.dtype a number": (lambda info: input_with(info, dtype=32), "input.dtype must be a type name"),
    "input.steps a mapping": (lambda info: input_with(info, steps={"a": 1}), "input.steps must be"),
    "classes numbers": (lambda info: {**info, "classes": [1, 2, 3, 4]}, "classes must be a list"),
    "classes repeated": (lambda info: {**info, "classes": ["a", "a"]}, "classes must be a list"),
    "class name with a newline": (
        lambda info: {**info, "classes": ["COVID\n  forged   line", "Normal"]},
        r"class name 'COVID\n  forged   line' has control characters",
    ),
    "class name with a terminal escape": (
        lambda info: {**info, "classes": ["\x1b[2J", "Normal"]},
        r"class name '\x1b[2J' has control characters",
    ),
    "image_size text": (lambda info: {**info, "image_size": "48"}, "image_size must be an integer from 16 to 1024"),
    "image_size 10**12": (lambda info: {**info, "image_size": 10**12}, "image_size must be an integer"),
    "image_size true": (lambda info: {**info, "image_size": True}, "image_size must be an integer"),
    "architecture a list": (lambda info: {**info, "architecture": ["cnn"]}, "architecture must be a model name"),
    "lungdx_version with a newline": (
        lambda info: {**info, "lungdx_version": "1.0\n  architecture   vgg19"},
        "lungdx_version must be",
    ),
}


@pytest.mark.parametrize("case", DAMAGED)
def test_damaged_metadata_is_one_error_line_naming_the_file(tiny_run, tmp_path, capsys, case):
    from lungdx.cli import main  # in this process: lungdx info imports no TensorFlow

    change, says = DAMAGED[case]
    made = change(real_info(tiny_run))
    damaged = copy_with(
        tiny_run / "models" / "model.keras",
        tmp_path / "damaged.keras",
        {"lungdx.json": made if isinstance(made, str) else json.dumps(made)},
    )
    assert main(["info", str(damaged)]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert_one_error_line(captured.err, damaged, says)


@pytest.mark.parametrize(
    "config, says",
    [
        ("[" * 200000 + "]" * 200000, "RecursionError"),
        ("not JSON", "JSONDecodeError"),
        ('{"class_name": "NoSuchLayer", "config": {}}', "TypeError: Could not locate class"),
    ],
)
def test_a_damaged_network_inside_a_lungdx_file_is_one_clear_error(tiny_run, tmp_path, config, says):
    """lungdx.json is fine; the network Keras reads (config.json) is not: whatever Keras raises for it,
    one LungdxError naming the file and saying to retrain."""
    from lungdx.model_file import load_model

    damaged = copy_with(tiny_run / "models" / "model.keras", tmp_path / "damaged.keras", {"config.json": config})
    with pytest.raises(
        LungdxError, match=rf"^{re.escape(str(damaged))}: could not be loaded .*{says}.*dvc repro -f train"
    ):
        load_model(damaged)


def special_file(kind: str, tmp_path: Path) -> tuple[Path, str]:
    """(a path that is no model file, what the refusal says)."""
    path = tmp_path / "model.keras"
    if kind == "named pipe":  # opening it for reading would wait for a writer forever
        os.mkfifo(path)
        return path, "a named pipe (FIFO), not a regular file"
    if kind == "character device":
        return Path("/dev/zero"), "a character device, not a regular file"
    if kind == "symbolic link loop":
        path.symlink_to(tmp_path / "other.keras")
        (tmp_path / "other.keras").symlink_to(path)
        return path, "a symbolic link loop"
    assert kind == "dangling symbolic link"
    path.symlink_to(tmp_path / "gone.keras")
    return path, f"a symbolic link to {tmp_path / 'gone.keras'}, which does not exist"


@pytest.mark.parametrize("kind", ["named pipe", "character device", "symbolic link loop", "dangling symbolic link"])
def test_what_is_not_a_regular_file_is_named_for_what_it_is(tmp_path, kind):
    path, says = special_file(kind, tmp_path)
    proc, _, seconds = lungdx("info", path)  # in a child with a timeout: a blocking open cannot hang the tests
    assert proc.returncode == 2
    assert_one_error_line(proc.stderr, path, says)
    assert "not found" not in proc.stderr and seconds < 3


def zeros_member(archive: zipfile.ZipFile, name: str, size: int) -> None:
    """A real bomb member: `size` zero bytes, deflated to about a thousandth."""
    with archive.open(name, "w", force_zip64=True) as member:
        for _ in range(size >> 24):
            member.write(bytes(1 << 24))


@pytest.mark.parametrize(
    "member, says",
    [
        ("config.json", "its config.json declares 536870912 bytes, more than"),
        ("model.weights.h5", "entry 'model.weights.h5' inflates 1,0"),
    ],
)
def test_a_decompression_bomb_is_refused_quickly_and_without_reading_it(tiny_run, tmp_path, member, says):
    source = tiny_run / "models" / "model.keras"
    bomb = tmp_path / "bomb.keras"
    with zipfile.ZipFile(source) as old, zipfile.ZipFile(bomb, "w", zipfile.ZIP_DEFLATED) as new:
        for name in old.namelist():
            if name != member:
                new.writestr(name, old.read(name))
        zeros_member(new, member, 512 << 20)  # Keras itself would read it whole: its own floor is 4 GiB
    assert bomb.stat().st_size < 8 << 20
    image = write_image(tmp_path / "x.png", np.zeros((64, 64), np.uint8))
    proc, peak, seconds = lungdx("predict", image, "--model", bomb)
    assert proc.returncode == 2
    assert_one_error_line(proc.stderr, bomb, says)
    assert seconds < 3 and peak < 400 << 20, (seconds, peak)  # inflated, it alone would be 512 MiB


@pytest.mark.slow  # builds a 300k-entry zip: seconds
def test_a_zip_of_300k_entries_is_refused_before_its_directory_is_read(tiny_run, tmp_path):
    many = tmp_path / "many.keras"
    with zipfile.ZipFile(many, "w") as archive:
        archive.writestr("lungdx.json", json.dumps(real_info(tiny_run)))
        for i in range(300_000):
            archive.writestr(str(i), b"")
    proc, peak, seconds = lungdx("info", many)
    assert proc.returncode == 2
    assert_one_error_line(proc.stderr, many, "holds 300,001 entries, more than the 1,000 allowed")
    # refused from the end record: ~0.3 s and ~50 MB in all; zipfile reading them all took ~8 s and ~210 MB
    assert seconds < 3 and peak < 160 << 20, (seconds, peak)


def test_a_zip_directory_larger_than_its_end_record_says_is_refused(tiny_run, tmp_path, capsys):
    from lungdx.cli import main

    liar = tmp_path / "liar.keras"
    with zipfile.ZipFile(liar, "w") as archive:
        archive.writestr("lungdx.json", json.dumps(real_info(tiny_run)))
        for i in range(30_000):
            archive.writestr(str(i), b"")
    data = bytearray(liar.read_bytes())
    end = data.rfind(b"PK\x05\x06")
    struct.pack_into("<HH", data, end + 8, 4, 4)  # the end record's entry counts: 4, as in a model file
    liar.write_bytes(bytes(data))
    assert len(zipfile.ZipFile(liar).infolist()) == 30_001  # zipfile reads the directory, not the count
    assert main(["info", str(liar)]) == 2
    assert_one_error_line(capsys.readouterr().err, liar, "its zip directory declares 1,")


def test_a_model_that_lungdx_saved_loads_and_is_shown(tiny_run, tmp_path, capsys):
    from lungdx.cli import main
    from lungdx.model_file import load_model, read_info

    model_path = tiny_run / "models" / "model.keras"
    model, info = load_model(model_path)
    assert info == read_info(model_path) == real_info(tiny_run)  # nothing lungdx writes is dropped or changed
    assert model.output_shape[-1] == len(info["classes"])
    assert main(["info", str(model_path)]) == 0
    out = capsys.readouterr().out
    assert "COVID, Lung_Opacity, Normal, Viral Pneumonia  (in output order)" in out and "48x48 px" in out
    # The first files lungdx saved said the input's shape instead of its channels.
    first = real_info(tiny_run)
    first["input"] = {"shape": [48, 48, 1], **{k: v for k, v in first["input"].items() if k != "channels"}}
    old = copy_with(model_path, tmp_path / "old.keras", {"lungdx.json": json.dumps(first)})
    assert read_info(old)["input"]["channels"] == 1


def test_a_model_file_is_a_function_of_its_model_not_of_when_it_was_saved(tiny_run, tmp_path):
    import time

    from lungdx.model_file import ZIP_TIME, load_model, save_model

    # Two copies of one model: other Python objects at other addresses, which Keras's config
    # records as shared_object_id, saved a second apart.
    model, info = load_model(tiny_run / "models" / "model.keras")
    copy, _ = load_model(tiny_run / "models" / "model.keras")
    args = (info["classes"], info["image_size"], info["architecture"], info["input"]["lung_mask"])
    first, second = tmp_path / "first.keras", tmp_path / "second.keras"
    save_model(model, first, *args)
    time.sleep(1.1)  # Keras's save date and zip times have a resolution of seconds
    save_model(copy, second, *args)
    assert first.read_bytes() == second.read_bytes()
    with zipfile.ZipFile(first) as archive:
        assert {entry.date_time for entry in archive.infolist()} == {ZIP_TIME}
        assert archive.namelist() == ["metadata.json", "config.json", "model.weights.h5", "lungdx.json"]
        assert "date_saved" not in json.loads(archive.read("metadata.json"))
    reloaded, reloaded_info = load_model(first)  # Keras still reads it, and so do we
    assert reloaded_info == info
    weights = [w.tobytes() for w in model.get_weights()]
    assert [w.tobytes() for w in reloaded.get_weights()] == weights
    # Another model gives another file: the bytes follow the weights.
    model.get_layer("probabilities").bias.assign(model.get_layer("probabilities").bias.numpy() + 1)
    save_model(model, second, *args)
    assert first.read_bytes() != second.read_bytes()
