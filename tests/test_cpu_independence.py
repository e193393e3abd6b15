"""Same params, same bytes on any x86-64 CPU: the data stages' outputs do not depend on the
processor's vector instructions or its number of cores.

Another CPU cannot be had here, so it is simulated on this one: NumPy and OpenCV both choose
their SIMD loops at run time and both can be told to leave some out (NPY_DISABLE_CPU_FEATURES,
OPENCV_CPU_DISABLE), and a process can be kept to one core (as on a 1-core machine, every
`n_jobs=-1` sees one). Each stage then runs as dvc repro runs it, `python -m stages.<name>`.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from lungdx import portable_math as pm
from tests.helpers import ROOT, copy_project, tree_hashes

DATA_STAGES = {
    "download": ["data/raw"],
    "sample": ["data/sampled"],
    "segment": ["data/segmented"],
    "prepare": ["data/prepared"],
    "baseline": ["metrics/baseline.json", "reports/baseline.json", "reports/baseline_predictions.csv"],
}
# OpenCV's dispatched levels above the x86-64 baseline (SSE2/SSE3), by the names it takes.
OPENCV_ABOVE_BASELINE = "AVX512F,AVX2,FMA3,AVX,FP16,SSE4.2,POPCNT,SSE4.1,SSSE3"
GLIBC_ABOVE_BASELINE = "glibc.cpu.hwcaps=-AVX512F,-AVX2,-FMA,-FMA4,-AVX"


def _numpy_dispatch_found() -> list[str]:
    """NumPy's run-time dispatched CPU features that this CPU has (beyond its build's baseline)."""
    from numpy._core._multiarray_umath import __cpu_dispatch__, __cpu_features__

    return [name for name in __cpu_dispatch__ if __cpu_features__.get(name)]


def simulated_cpus() -> dict[str, dict]:
    """Environments that make this CPU look like an older one to NumPy and OpenCV; skip the test
    where this CPU has nothing above NumPy's baseline to leave out (then each would be the same run)."""
    found = _numpy_dispatch_found()
    avx512 = [name for name in found if name.startswith(("X86_V4", "AVX512"))]
    if not found:
        pytest.skip("this CPU has no NumPy SIMD level above the baseline: no older CPU to simulate")
    cpus = {"this CPU, every core": {"env": {}, "one_core": False}}
    if avx512:
        cpus["NumPy without AVX-512"] = {"env": {"NPY_DISABLE_CPU_FEATURES": " ".join(avx512)}, "one_core": False}
    cpus["NumPy, OpenCV and the C library at the x86-64 baseline, one core"] = {
        "env": {
            "NPY_DISABLE_CPU_FEATURES": " ".join(found),
            "OPENCV_CPU_DISABLE": OPENCV_ABOVE_BASELINE,
            # glibc's libm picks FMA/AVX2 variants of exp (which NumPy's normal draws call) at start
            "GLIBC_TUNABLES": GLIBC_ABOVE_BASELINE,
        },
        "one_core": True,
    }
    return cpus


def _one_core() -> None:
    os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})


def _run_as(cpu: dict, cmd: list[str], cwd: Path) -> str:
    proc = subprocess.run(
        cmd,
        cwd=cwd,
        capture_output=True,
        text=True,
        env={**os.environ, **cpu["env"]},
        preexec_fn=_one_core if cpu["one_core"] else None,
    )
    assert proc.returncode == 0, f"{' '.join(cmd)} under {cpu}:\n{proc.stdout}\n{proc.stderr}"
    return proc.stderr


@pytest.mark.slow
def test_data_stages_write_the_same_bytes_whatever_the_cpu(tmp_path):
    # Synthetic images at their default size (at 96 px NumPy's rounding never reached a pixel of
    # 48 images; at 256 it did in 6), larger than the prepared ones by a factor that is not whole,
    # so prepare's resize takes OpenCV's float INTER_AREA path (a whole factor stays in integers).
    params = {
        "dataset.synthetic.per_class": 12,
        "dataset.synthetic.image_size": 256,
        "prepare.image_size": 40,
        "baseline.image_size": 12,
        "baseline.n_estimators": 30,
    }
    hashes = {}
    for name, cpu in simulated_cpus().items():
        project = copy_project(tmp_path / f"p{len(hashes)}", **params)
        for stage in DATA_STAGES:
            _run_as(cpu, [sys.executable, "-m", f"stages.{stage}"], project)
        outputs = tuple(out for outs in DATA_STAGES.values() for out in outs)
        hashes[name] = {path: digest for path, digest in tree_hashes(project).items() if path.startswith(outputs)}
    first, *others = hashes
    assert len(hashes[first]) > 12 * 4 * 3  # every image, mask and lesion, and more
    for name in others:
        differing = sorted(path for path in hashes[first] if hashes[name].get(path) != hashes[first][path])
        assert not differing, f"{name} wrote other bytes than {first}: {differing[:10]}"


def test_portable_math_gives_the_same_bits_whatever_numpys_simd_level(tmp_path):
    # NumPy's own, for contrast: float64 exp, log and power have AVX-512 loops, float32 exp has
    # AVX2 ones too, so some differ on any CPU with a level above the baseline.
    script = (
        "import hashlib, numpy as np; from lungdx import portable_math as pm; "
        "x = np.linspace(-50, 50, 100001); y = np.linspace(1e-9, 4, 100001); "
        "print(hashlib.md5(b''.join(f(a).tobytes() for f, a in "
        "((pm.exp, x), (pm.log, y), (lambda v: pm.power(v, 0.87), y), (pm.sin, x), (pm.cos, x)))).hexdigest(), "
        "hashlib.md5(b''.join(f(a).tobytes() for f, a in ((np.exp, x), (np.log, y), (lambda v: v ** 0.87, y), "
        "(np.exp, x.astype(np.float32)), (lambda v: v ** np.float32(0.87), y.astype(np.float32))))).hexdigest())"
    )
    outputs = {}
    for name, cpu in simulated_cpus().items():
        proc = subprocess.run(
            [sys.executable, "-c", script],
            capture_output=True,
            text=True,
            check=True,
            env={**os.environ, **cpu["env"], "PYTHONPATH": str(ROOT)},
        )
        outputs[name] = proc.stdout.split()
    ours = {value[0] for value in outputs.values()}
    numpys = {value[1] for value in outputs.values()}
    assert len(ours) == 1, outputs
    # The reason for the module: NumPy's own functions round differently at another SIMD level.
    assert len(numpys) > 1, f"NumPy's exp, log and power gave the same bits at every level here: {outputs}"


def test_opencv_is_pinned_to_one_code_path_whatever_its_simd_level():
    """lungdx.opencv's pin, against OpenCV left to choose: a float blur and resize give other bits
    with its AVX2/AVX-512 loops disabled, unless the pin is on."""
    script = (
        "import hashlib, sys, numpy as np; from lungdx.opencv import cv2; "
        "cv2.setUseOptimized(sys.argv[1] == 'free'); "
        "a = np.random.default_rng(0).random((256, 256), dtype=np.float32); "
        "print(hashlib.md5(cv2.GaussianBlur(a, (0, 0), 2.5).tobytes() + "
        "cv2.resize(a, (97, 97), interpolation=cv2.INTER_AREA).tobytes() + "
        "cv2.warpAffine(a, np.float64([[0.98, 0.1, 3.3], [-0.1, 0.98, -2.1]]), (256, 256)).tobytes()).hexdigest())"
    )
    cpus = simulated_cpus()
    hashes = {
        mode: {
            subprocess.run(
                [sys.executable, "-c", script, mode],
                capture_output=True,
                text=True,
                check=True,
                env={**os.environ, **cpu["env"], "PYTHONPATH": str(ROOT)},
            ).stdout
            for cpu in cpus.values()
        }
        for mode in ("free", "pinned")
    }
    assert len(hashes["pinned"]) == 1, hashes
    if not any(flag in open("/proc/cpuinfo").read() for flag in (" avx2 ", " avx512f ")):
        pytest.skip("this CPU has no AVX2: OpenCV left free runs its baseline too")
    assert len(hashes["free"]) > 1, "OpenCV gave the same bits with and without its SIMD loops: nothing to pin"


def test_no_module_imports_opencv_around_its_pin():
    """cv2 comes from lungdx.opencv alone: a module importing cv2 itself could run OpenCV before the
    pin, in a process that never imports lungdx.opencv."""
    import ast

    direct = []
    for path in sorted((ROOT / "lungdx").glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            names = (
                [a.name for a in node.names]
                if isinstance(node, ast.Import)
                else [node.module]
                if isinstance(node, ast.ImportFrom) and node.level == 0
                else []
            )
            if any(name and name.split(".")[0] == "cv2" for name in names) and path.name != "opencv.py":
                direct.append(f"{path.name}:{node.lineno}")
    assert direct == [], f"import cv2 from lungdx.opencv instead: {direct}"


def test_portable_math_is_accurate():
    x = np.linspace(-700, 700, 20001)
    assert np.max(np.abs(pm.exp(x) / np.exp(x) - 1)) < 1e-15
    assert pm.exp(-1e6) == 0 and pm.exp(1e6) == np.inf and pm.exp(0.0) == 1
    y = np.concatenate([np.logspace(-300, 300, 20001), np.linspace(1e-6, 10, 20001)])
    assert np.max(np.abs(pm.log(y) - np.log(y)) / np.maximum(1, np.abs(np.log(y)))) < 1e-15
    assert np.isnan(pm.log(0.0)) and np.isnan(pm.log(-1.0))
    z = np.linspace(0, 1, 10001)
    assert np.max(np.abs(pm.power(z, 0.8) - z**0.8)) < 1e-15 and pm.power(0.0, 1.1) == 0
    for turns, tolerance in ((1, 1e-15), (16, 1e-13)):  # the reduction by 2 pi loses a bit per turn or so
        a = np.linspace(-2 * np.pi * turns, 2 * np.pi * turns, 20001)
        assert np.max(np.abs(pm.sin(a) - np.sin(a))) < tolerance and np.max(np.abs(pm.cos(a) - np.cos(a))) < tolerance


def test_the_forest_is_the_same_on_one_thread_or_two():
    """Fitted on two threads (as the stage does on 2 cores), the forest's trees and our probabilities
    are those of a forest fitted and asked on one."""
    from lungdx.baseline import probabilities, random_forest

    rng = np.random.default_rng(0)
    x, y = rng.random((300, 64), dtype=np.float32), rng.integers(0, 4, 300)
    one, two = random_forest(40, 7, n_jobs=1).fit(x, y), random_forest(40, 7, n_jobs=2).fit(x, y)
    assert [(t.tree_.threshold.tobytes(), t.tree_.value.tobytes()) for t in one.estimators_] == [
        (t.tree_.threshold.tobytes(), t.tree_.value.tobytes()) for t in two.estimators_
    ]
    assert probabilities(two, x).tobytes() == one.predict_proba(x).tobytes()
    assert two.n_jobs == 1  # probabilities() says it sets it


def test_opencv_runs_its_baseline_code_path():
    from lungdx.opencv import cv2

    assert not cv2.useOptimized()
    assert not cv2.ipp.useIPP()
