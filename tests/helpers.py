"""What tests share: real images on disk, the shared real samples, a project copy under git,
running commands and benchmarks. Fixtures and pytest hooks live in conftest.py; this module
is plain code that tests import (`from tests.helpers import ...`)."""

from __future__ import annotations

import hashlib
import json
import shutil
import struct
import subprocess
import sys
import zlib
from pathlib import Path

import cv2
import numpy as np
import pytest
import yaml

from lungdx import params as P
from lungdx.params import with_changes

ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = ROOT.parent / "shared" / "data"
PROJECT_FILES = ["dvc.yaml", "params.yaml", "stages", "lungdx", ".dvc/config", ".dvc/plots", ".dvcignore", ".gitignore"]


def shared(name: str) -> Path:
    """A folder of ../shared/data, or skip the test with the reason."""
    path = SHARED_DATA / name
    if not path.is_dir():
        pytest.skip(f"real samples not available: {path} is absent (see ../shared/data/README.md)")
    return path


def tree_hashes(root: Path) -> dict[str, str]:
    """sha256 and mode of every file below root, to prove a run changed nothing there."""
    out = {}
    for p in sorted(Path(root).rglob("*")):
        if p.is_file():
            out[p.relative_to(root).as_posix()] = (hashlib.sha256(p.read_bytes()).hexdigest(), p.stat().st_mode)
    return out


def write_image(path: Path, img: np.ndarray) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    assert cv2.imwrite(str(path), img), path
    return path


def xray(seed: int, size: int = 64) -> np.ndarray:
    """A distinct random gray image (different seeds never collide)."""
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, (size, size), dtype=np.uint8)


def make_flat_dataset(root: Path, counts: dict[str, int], size: int = 64, start: int = 0) -> Path:
    """Old Kaggle layout: <Class>/<Class>-<n>.png."""
    for k, (cls, n) in enumerate(counts.items()):
        for i in range(n):
            write_image(root / cls / f"{cls}-{i + 1}.png", xray(start + 1000 * k + i, size))
    return root


def make_kaggle_dataset(root: Path, counts: dict[str, int], size: int = 64, top: str | None = None) -> Path:
    """Current Kaggle layout with masks, metadata files beside the class folders."""
    base = root / top if top else root
    for k, (cls, n) in enumerate(counts.items()):
        for i in range(n):
            write_image(base / cls / "images" / f"{cls}-{i + 1}.png", xray(1000 * k + i, size))
            mask = np.zeros((size, size), np.uint8)
            mask[size // 4 : 3 * size // 4, size // 8 : size // 2] = 255
            write_image(base / cls / "masks" / f"{cls}-{i + 1}.png", mask)
        (base / f"{cls}.metadata.xlsx").write_bytes(b"PK\x03\x04 not really a spreadsheet")
    (base / "README.md.txt").write_text("COVID-19 Radiography Database\n")
    return root


def require_private_mounts() -> None:
    """Skip unless this process may mount file systems in a private mount namespace
    (`unshare --user --map-root-user --mount`: no root needed where the kernel allows it)."""
    probe = shutil.which("unshare") and subprocess.run(
        [
            "unshare",
            "--user",
            "--map-root-user",
            "--mount",
            "sh",
            "-c",
            "d=$(mktemp -d) && mount -t tmpfs -o size=64k tmpfs $d",
        ],
        capture_output=True,
    )
    if not probe or probe.returncode != 0:
        pytest.skip(
            "cannot mount a small tmpfs here: unprivileged user namespaces "
            "(unshare --user --map-root-user --mount) are not allowed by this kernel"
        )


def run(cmd: list[str], cwd: Path, check: bool = True, **kw) -> subprocess.CompletedProcess:
    proc = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, **kw)
    if check and proc.returncode != 0:
        raise AssertionError(f"{' '.join(cmd)} failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
    return proc


def settings(changes: dict | None = None, **more) -> P.Params:
    """This project's params.yaml with dotted-key changes, checked: every stage's settings, as the
    stages get them (settings({"sample.per_class": 10}).sample). Every value not changed is
    params.yaml's: the only defaults there are."""
    return P.check(with_changes(P.read(ROOT / "params.yaml"), {**(changes or {}), **more}))


def set_params(project: Path, **changes) -> None:
    """Edit params.yaml in place, as `dvc exp run -S` would: set_params(p, **{"sample.per_class": 10})."""
    path = project / "params.yaml"
    path.write_text(yaml.safe_dump(with_changes(yaml.safe_load(path.read_text()), changes), sort_keys=False))


TINY = {
    "dataset.synthetic.per_class": 12,
    "dataset.synthetic.image_size": 64,
    "prepare.image_size": 32,
    "baseline.image_size": 8,
    "baseline.n_estimators": 20,
    "models.cnn.epochs": 2,
    "models.cnn.warmup_epochs": 0,
    "models.vgg19.epochs": 2,
    "models.vgg19.weights": "none",  # no ImageNet download offline
}


def copy_project(dest: Path, **params) -> Path:
    """A copy of this project in its own git repository, with `params` set, committed."""
    for name in PROJECT_FILES:
        src = ROOT / name
        if src.is_dir():
            shutil.copytree(src, dest / name, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            (dest / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dest / name)
    if params:
        set_params(dest, **params)
    run(["git", "init", "-q", "-b", "main"], dest)
    commit(dest, "project")
    return dest


def commit(project: Path, message: str) -> None:
    """git add -A and commit, as a user would after a run."""
    run(["git", "add", "-A"], project)
    run(["git", "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-q", "-m", message], project)


def stages_run(output: str) -> list[str]:
    """Names of the stages a `dvc repro` / `dvc exp run` output says it ran."""
    return [line.split("'")[1] for line in output.splitlines() if line.startswith("Running stage '")]


def png_bomb(path: Path, side: int = 30000, bit_depth: int = 8, height: int | None = None) -> Path:
    """A real, valid black gray PNG, side wide and `height` (default side) high: tiny on disk,
    side x height x bit_depth/8 bytes once decoded.

    IHDR, then one IDAT of zero rows (filter byte 0, black pixels) deflated in chunks of 64
    rows, then IEND; CRCs correct. After a full flush deflate starts afresh, so identical
    chunks compress to identical bytes: each distinct chunk is compressed once and repeated,
    which makes a 30000² bomb in milliseconds instead of seconds.
    """

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    row = 1 + side * bit_depth // 8
    deflate = zlib.compressobj(9, zlib.DEFLATED, -15)  # raw deflate; the zlib header and checksum are ours
    compressed, stream = {}, [b"\x78\xda"]  # zlib header: deflate, 32K window, level 9
    height = side if height is None else height
    for start in range(0, height, 64):
        rows = min(64, height - start)
        if rows not in compressed:
            compressed[rows] = deflate.compress(bytes(row * rows)) + deflate.flush(zlib.Z_FULL_FLUSH)
        stream.append(compressed[rows])
    stream.append(deflate.flush(zlib.Z_FINISH))
    # Adler-32 of n zero bytes: a stays 1, b adds 1 per byte.
    stream.append(struct.pack(">I", ((row * height) % 65521) << 16 | 1))
    ihdr = struct.pack(">IIBBBBB", side, height, bit_depth, 0, 0, 0, 0)  # gray, deflate, adaptive, no interlace
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", b"".join(stream)) + chunk(b"IEND", b"")
    )
    return path


def zip_folder(folder: Path, dest: Path) -> Path:
    return Path(shutil.make_archive(str(dest.with_suffix("")), "zip", folder))


def run_benchmark(name: str, *args: str) -> dict:
    """`python -m benchmarks.<name> ARGS` from the repository root; its last stdout line, parsed."""
    proc = subprocess.run(
        [sys.executable, "-m", f"benchmarks.{name}", *args], cwd=ROOT, capture_output=True, text=True, timeout=900
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


def list_lung_masks(root: Path, manifest: Path, raw_dir: Path, out: str = "segmented") -> Path:
    """The segment stage under lung_mask none into root/out: the dataset's own lung masks listed,
    nothing learned (what prepare reads); returns the folder."""
    from lungdx.segment import segment

    none = settings({"prepare.lung_mask": "none"}).segment
    segment(
        none, manifest, raw_dir, root / out, root / f"{out}.json", root / f"{out}_details.json", root / f"{out}_images"
    )
    return root / out


def run_library_stages(root: Path, params: P.Params) -> Path:
    """The pipeline's library functions in stage order, from root/raw (already there) to the
    report: sampled/, prepared/, features/, models/model.keras, dvclive/, eval.json,
    eval_details.json, plots/, report/, report_images/, gradcam.json."""
    from lungdx.evaluate import evaluate
    from lungdx.features import features
    from lungdx.gradcam import gradcam
    from lungdx.prepare import prepare
    from lungdx.sample import sample
    from lungdx.train import train

    model, manifest = root / "models" / "model.keras", root / "sampled" / "manifest.csv"
    sample(params.sample, root / "raw", root / "sampled")
    prepare(params.prepare, manifest, root / "raw", list_lung_masks(root, manifest, root / "raw"), root / "prepared")
    features(params.features, root / "prepared", root / "features")
    train(params.train, root / "prepared", root / "features", model, root / "dvclive")
    evaluate(
        params.evaluate,
        model,
        root / "prepared",
        manifest,
        root / "eval.json",
        root / "eval_details.json",
        root / "plots",
        root / "features",
    )
    gradcam(
        params.gradcam,
        model,
        root / "prepared",
        manifest,
        root / "eval_details.json",
        root / "report",
        root / "gradcam.json",
        root / "report_images",
    )
    return root


def patient_parts(source: Path, dest: Path, held_out: float = 1 / 3, seed: int = 239) -> dict[str, Path]:
    """Copy a Kaggle-layout dataset whose manifest.csv names each image's patientid (like
    ../shared/data/cxr-covid-masked) into dest/train and dest/held_out, a seeded share of the
    patients held out, so that no patient is in both parts. Returns the two folders."""
    import pandas as pd

    manifest = pd.read_csv(source / "manifest.csv")
    patients = sorted(manifest["patientid"].astype(str).unique())
    order = np.random.default_rng(seed).permutation(len(patients))
    out = {
        p: "held_out" if rank < round(held_out * len(patients)) else "train"
        for rank, p in zip(np.argsort(order), patients, strict=True)
    }
    for row in manifest.itertuples():
        part = dest / out[str(row.patientid)] / row.cls
        for kind in ("images", "masks"):
            (part / kind).mkdir(parents=True, exist_ok=True)
            shutil.copyfile(source / row.cls / kind / f"{row.name}.png", part / kind / f"{row.name}.png")
    return {"train": dest / "train", "held_out": dest / "held_out"}
