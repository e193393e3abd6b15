"""The installed `lungdx` command (pip install -e .): help, version, info and predict from any
folder, TensorFlow's start-up lines hidden unless asked for, one-line errors."""

import json
import logging
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import lungdx
from lungdx.cli import build_parser
from lungdx.console import configure_logging
from tests.helpers import ROOT

# TensorFlow's C++ lines: absl's preamble and glog-style records (I0000 00:00:17... cudart_stub.cc:31] ...)
TF_LINE = re.compile(r"absl::InitializeLog|^[IWEF]\d{4} \d\d:\d\d:\d\d", re.M)


def user_env() -> dict:
    """The environment of a person at a terminal: no PYTHONPATH, no TensorFlow log level of ours."""
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "TF_CPP_MIN_LOG_LEVEL", "LUNGDX_VERBOSE")}
    return {**env, "LUNGDX_PROGRESS": "0"}


def run_as_user(args: list, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([str(a) for a in args], cwd=cwd, env=user_env(), capture_output=True, text=True, timeout=300)


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> str:
    """The `lungdx` executable of this checkout's install; skips when it is not installed."""
    exe = shutil.which("lungdx")
    if exe is None:
        pytest.skip('the lungdx command is not on PATH: install the package first, pip install -e ".[test]"')
    where = run_as_user(
        [sys.executable, "-c", "import lungdx; print(lungdx.__file__)"], tmp_path_factory.mktemp("away")
    )
    assert where.returncode == 0, f"lungdx is on PATH but cannot be imported from another folder: {where.stderr}"
    if not Path(where.stdout.strip()).is_relative_to(ROOT):
        pytest.skip(f"the installed lungdx is another checkout's ({where.stdout.strip()}): pip install -e . here")
    return exe


def test_version_help_and_usage(installed, tmp_path):
    version = run_as_user([installed, "--version"], tmp_path)
    assert (version.returncode, version.stdout, version.stderr) == (0, f"lungdx {lungdx.__version__}\n", "")
    top = run_as_user([installed, "--help"], tmp_path)
    assert top.returncode == 0 and top.stderr == ""
    assert "predict" in top.stdout and "info" in top.stdout and "--verbose" in top.stdout
    sub = run_as_user([installed, "predict", "--help"], tmp_path)
    assert sub.returncode == 0 and sub.stderr == "" and "--model" in sub.stdout and "--gradcam" in sub.stdout
    bare = run_as_user([installed], tmp_path)
    assert bare.returncode == 2 and bare.stdout == "" and bare.stderr.startswith("usage: lungdx")


def test_the_package_imports_from_another_folder(installed, tmp_path):
    proc = run_as_user([sys.executable, "-c", "import lungdx; print(lungdx.__version__)"], tmp_path)
    assert (proc.returncode, proc.stdout, proc.stderr) == (0, f"{lungdx.__version__}\n", "")


def test_verbose_and_quiet_are_taken_before_or_after_the_command():
    parser = build_parser()
    after = parser.parse_args(["predict", "a.png", "-v", "-q"])
    assert after.verbose and after.quiet and after.images == [Path("a.png")]
    before = parser.parse_args(["-v", "predict", "a.png"])
    assert before.verbose and not hasattr(before, "quiet")


def test_info_shows_what_the_model_file_carries_without_tensorflow(installed, tiny_run, tmp_path):
    from lungdx.model_file import read_info

    model = tiny_run / "models" / "model.keras"
    script = (
        "import sys\nfrom lungdx.cli import main\nstatus = main(sys.argv[1:])\n"
        "assert 'tensorflow' not in sys.modules and 'keras' not in sys.modules\nsys.exit(status)"
    )
    text = run_as_user([sys.executable, "-c", script, "info", model], tmp_path)
    assert text.returncode == 0 and text.stderr == "", text.stderr
    lines = text.stdout.splitlines()
    assert lines[0] == str(model)
    assert "architecture    cnn" in lines[1]
    assert "COVID, Lung_Opacity, Normal, Viral Pneumonia  (in output order)" in text.stdout
    assert "48x48 px" in text.stdout and f"lungdx version  {lungdx.__version__}" in text.stdout
    as_json = json.loads(run_as_user([sys.executable, "-c", script, "info", model, "--json"], tmp_path).stdout)
    assert as_json == {"path": str(model), "file_bytes": model.stat().st_size, **read_info(model)}


def test_info_on_a_missing_file_is_one_line(installed, tmp_path):
    proc = run_as_user([sys.executable, "-m", "lungdx", "info", "nowhere.keras"], tmp_path)  # python -m: the same main
    assert proc.returncode == 2 and proc.stdout == ""
    assert proc.stderr.startswith("error: nowhere.keras: not found") and len(proc.stderr.splitlines()) == 1


def test_predict_from_another_folder_with_relative_paths_and_no_tensorflow_lines(installed, tiny_run, tmp_path):
    from lungdx.predict import predict_files

    # A folder of a person's own: the model where the default looks (models/model.keras), scans beside it.
    (tmp_path / "models").mkdir()
    shutil.copy(tiny_run / "models" / "model.keras", tmp_path / "models" / "model.keras")
    sources = sorted(tiny_run.glob("raw/*/images/*.png"))[::10][:3]
    (tmp_path / "scans").mkdir()
    for source in sources:
        shutil.copy(source, tmp_path / "scans" / source.name)
    relative = [f"scans/{source.name}" for source in sources]
    proc = run_as_user([installed, "predict", *relative, "--json"], tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert not TF_LINE.search(proc.stderr), f"TensorFlow's start-up lines were shown:\n{proc.stderr}"
    assert proc.stderr == ""
    expected = predict_files(sources, tiny_run / "models" / "model.keras")
    got = json.loads(proc.stdout)
    assert [r["path"] for r in got] == relative
    assert [r["predicted"] for r in got] == [r["predicted"] for r in expected]
    for mine, reference in zip(got, expected, strict=True):
        assert mine["probabilities"] == pytest.approx(reference["probabilities"], abs=1e-6)

    verbose = run_as_user([installed, "-v", "predict", relative[0], "--model", "models/model.keras"], tmp_path)
    assert verbose.returncode == 0, verbose.stderr
    assert TF_LINE.search(verbose.stderr), f"-v shows TensorFlow's own lines:\n{verbose.stderr}"
    assert "debug: TensorFlow" in verbose.stderr
    assert verbose.stdout.splitlines()[1].startswith(relative[0])


def test_without_a_model_in_this_folder_the_error_says_to_pass_model(installed, tmp_path):
    proc = run_as_user([installed, "predict", "scan.png"], tmp_path)
    assert proc.returncode == 2 and proc.stdout == ""
    assert proc.stderr == (
        f"error: no model given and there is no models/model.keras in this folder ({tmp_path}); "
        "pass --model PATH with the trained model file, or train one first (dvc repro train) "
        "in the project's folder\n"
    )


def test_log_lines_have_the_prefixes_people_read_and_verbose_adds_debug(capsys, monkeypatch):
    monkeypatch.setenv("TF_CPP_MIN_LOG_LEVEL", "3")  # verbose changes it; put back after the test
    monkeypatch.delenv("LUNGDX_VERBOSE", raising=False)
    log = logging.getLogger("lungdx.somewhere")
    try:
        configure_logging()
        log.debug("hidden")
        log.info("one note")
        log.warning("one warning")
        log.error("one error")
        assert capsys.readouterr().err == "note: one note\nwarning: one warning\nerror: one error\n"
        monkeypatch.setenv("LUNGDX_VERBOSE", "1")  # what a stage under dvc repro reads
        configure_logging()
        log.debug("shown")
        assert capsys.readouterr().err == "debug: shown\n"
        assert os.environ["TF_CPP_MIN_LOG_LEVEL"] == "0"
    finally:
        monkeypatch.delenv("LUNGDX_VERBOSE", raising=False)
        configure_logging()
    log.warning("once")
    assert capsys.readouterr().err == "warning: once\n", "configuring again replaces its handler, never adds one"


def test_a_tensorflow_that_fails_to_start_shows_what_it_said_and_one_error(tiny_run, tmp_path):
    # A broken install: tensorflow writes its reason to fd 2 (as its C++ code does), then raises.
    fake = tmp_path / "broken" / "tensorflow"
    fake.mkdir(parents=True)
    (fake / "__init__.py").write_text(
        "import os\nos.write(2, b'E0000 protobuf: cannot load descriptors\\n')\n"
        "raise TypeError('Descriptors cannot be created directly.')\n"
    )
    scan = sorted(tiny_run.glob("raw/*/images/*.png"))[0]
    proc = subprocess.run(
        [sys.executable, "-m", "lungdx", "predict", scan, "--model", tiny_run / "models" / "model.keras"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
        env={**user_env(), "PYTHONPATH": f"{fake.parent}{os.pathsep}{ROOT}"},
    )
    assert proc.returncode == 2 and proc.stdout == "", proc.stderr
    assert proc.stderr.splitlines() == [
        "E0000 protobuf: cannot load descriptors",
        "error: TensorFlow could not start (TypeError: Descriptors cannot be created directly.); reinstall the "
        "pinned versions (pip install -e .); LUNGDX_VERBOSE=1 (or lungdx -v) shows all of its messages",
    ]


def test_grad_cam_overlays_never_overwrite_an_input_and_never_share_a_name(tiny_run, tmp_path):
    from lungdx.predict import predict_files

    scans = sorted(tiny_run.glob("raw/*/images/*.png"))
    names = ["a.png", "a.gradcam.png", "a-2.png", "x/a.png"]  # a.png's overlay would be the second input
    for name, source in zip(names, scans[: len(names)], strict=True):  # the first few scans
        (tmp_path / name).parent.mkdir(exist_ok=True)
        shutil.copy(source, tmp_path / name)
    inputs = [tmp_path / name for name in names]
    before = {p: p.read_bytes() for p in inputs}
    results = predict_files(inputs, tiny_run / "models" / "model.keras", tmp_path)
    overlays = [Path(r["gradcam"]) for r in results]
    assert len(set(overlays)) == len(inputs) and not set(overlays) & set(inputs), overlays
    assert all(p.read_bytes() == data for p, data in before.items())
    # a.png's overlay name is an input's: it moves aside, and the names after it step around it.
    assert [o.name for o in overlays] == [
        "a-2.gradcam.png",
        "a.gradcam.gradcam.png",
        "a-2-2.gradcam.png",
        "a-3.gradcam.png",
    ]


def test_a_bad_grad_cam_folder_or_a_pipe_is_one_line_and_the_other_files_are_answered(tiny_run, tmp_path, capsys):
    from lungdx.cli import main

    model = tiny_run / "models" / "model.keras"
    scan = sorted(tiny_run.glob("raw/*/images/*.png"))[0]
    (tmp_path / "a_file").write_text("not a folder")
    # The folder is checked before the model loads: a missing model is not what it says.
    assert main(["predict", str(scan), "--model", "nowhere.keras", "--gradcam", str(tmp_path / "a_file")]) == 2
    err = capsys.readouterr().err
    assert err == f"error: cannot use {tmp_path / 'a_file'} as the Grad-CAM folder: File exists\n"

    os.mkfifo(tmp_path / "pipe")  # reading it would block forever; /dev/zero would never end
    assert main(["-q", "predict", str(scan), str(tmp_path / "pipe"), "/dev/zero", "--model", str(model)]) == 1
    out, err = capsys.readouterr()
    assert err.splitlines() == [
        f"error: {tmp_path / 'pipe'}: not a regular file (a folder, pipe, device or socket)",
        "error: /dev/zero: not a regular file (a folder, pipe, device or socket)",
    ]
    assert out.splitlines()[1].startswith(str(scan))


def test_names_with_control_characters_cannot_forge_output_lines():
    from lungdx.cli import shown

    assert shown("scan\nerror: forged.png") == "scan\\nerror: forged.png"
    assert shown("\x1b[31mred") == "\\x1b[31mred" and shown("日本 ok.png") == "日本 ok.png"
