"""The pipeline on the real samples in ../shared/data (skipped when absent)."""

from pathlib import Path

import numpy as np
import pytest

from lungdx.arrays import predict as predict_probs
from lungdx.download import download
from lungdx.evaluate import evaluate
from lungdx.features import features
from lungdx.heatmaps import GradCam, energy_inside, upsample
from lungdx.images import load_for_model, prepare_image
from lungdx.model_file import load_model
from lungdx.prepare import prepare
from lungdx.sample import sample
from lungdx.train import train
from tests.helpers import list_lung_masks, settings, shared

# Reduced settings: 64 px instead of 128, 30 epochs at most; the original CNN otherwise.
REDUCED = {
    "seed": 239,
    "prepare.image_size": 64,
    "model": "cnn",
    "models.cnn.epochs": 30,
    "models.cnn.batch_size": 16,
    "models.cnn.learning_rate": 3e-4,
    "models.cnn.warmup_epochs": 10,
    "models.cnn.patience": 8,
    "models.cnn.filters": [16, 32, 64, 128, 256],
    "models.cnn.dense_units": 160,
    "models.cnn.dropout": 0.3,
}


@pytest.mark.slow
def test_cnn_on_real_covid_vs_normal_learns_well_above_chance(tmp_path):
    src = shared("cxr-real")
    params = settings(
        {
            **REDUCED,
            "dataset.source": str(src),
            "dataset.classes": [],
            "sample.per_class": 2690,
            "sample.val_size": 0.1,
            "sample.test_size": 0.2,
            "prepare.lung_mask": "none",
        }
    )
    download(params.download, tmp_path / "raw")
    manifest = sample(params.sample, tmp_path / "raw", tmp_path / "sampled")
    assert manifest.groupby("class").size().to_dict() == {"COVID": 250, "Normal": 250}
    manifest = tmp_path / "sampled" / "manifest.csv"
    prepare(
        params.prepare,
        manifest,
        tmp_path / "raw",
        list_lung_masks(tmp_path, manifest, tmp_path / "raw"),
        tmp_path / "prepared",
    )
    features(params.features, tmp_path / "prepared", tmp_path / "features")
    train(
        params.train,
        tmp_path / "prepared",
        tmp_path / "features",
        tmp_path / "models" / "model.keras",
        tmp_path / "dvclive",
    )
    result = evaluate(
        params.evaluate,
        tmp_path / "models" / "model.keras",
        tmp_path / "prepared",
        tmp_path / "sampled" / "manifest.csv",
        tmp_path / "eval.json",
        tmp_path / "details.json",
        tmp_path / "plots",
        tmp_path / "features",
    )
    print(f"real COVID vs Normal, 64 px: accuracy {result['accuracy']}, f1_macro {result['f1_macro']}")
    assert result["n_test"] == 100 and list(result["per_class"]) == ["COVID", "Normal"]
    # Chance is 0.5. The same code and seed gave 0.86 on an Intel Xeon and 0.82 on an AMD EPYC:
    # TensorFlow's CPU kernels differ by processor, and 100 test images carry about +-4 points.
    assert result["accuracy"] >= 0.78, result

    # Where does this real-data model look? The masked real images of the Kaggle layout (one per class,
    # four in all: a number to read, not to judge) against their lung masks.
    model, info = load_model(tmp_path / "models" / "model.keras")
    kaggle = shared("cxr-kaggle-layout")
    paths = sorted(kaggle.glob("*/images/*.png"))
    images = np.stack([load_for_model(p, 64, "none") for p in paths])
    masks = np.stack([prepare_image(p, 64, "none", p.parent.parent / "masks" / p.name)[1] for p in paths])
    predicted = predict_probs(model, images).argmax(1)
    share = energy_inside(upsample(GradCam(model).explain(images, predicted).heatmaps, 64), masks)
    print(
        "lung energy share on cxr-kaggle-layout:",
        {p.parent.parent.name: round(float(s), 3) for p, s in zip(paths, share, strict=True)},
        "mean",
        round(float(np.nanmean(share)), 3),
        "lung area",
        round(float((masks > 0).mean()), 3),
    )
    assert share.shape == (4,) and np.all((share >= 0) & (share <= 1))


@pytest.mark.slow
def test_the_lungs_learned_from_real_masks_hold_on_patients_never_seen_and_serve_predict_and_external(tmp_path):
    """cxr-covid-masked split by patient (a third held out); the segment stage learns on the rest
    at params.yaml's settings: Dice >= 0.90 on the held-out patients. A classifier carrying that
    segmenter then needs no masks: lungdx predict on cxr-real X-rays, lungdx external on a
    folder without masks, and on the held-out part it scores the segmenter's Dice."""
    import json
    import shutil

    from lungdx.external import evaluate_external
    from lungdx.model_file import save_model
    from lungdx.models import build_cnn
    from lungdx.predict import predict_files
    from lungdx.segment import masked_pairs, score, segment
    from lungdx.splits import SEGMENTER_FILE
    from tests.helpers import ROOT, patient_parts

    parts = patient_parts(shared("cxr-covid-masked"), tmp_path / "parts")
    real = shared("cxr-real")
    params = settings(
        {
            "prepare.lung_mask": "crop",
            "segment.train_source": str(parts["train"]),
            "dataset.source": str(real),
            "sample.per_class": 20,
        }
    )
    download(params.download, tmp_path / "raw")
    sample(params.sample, tmp_path / "raw", tmp_path / "sampled")
    meta = segment(
        params.segment,
        tmp_path / "sampled" / "manifest.csv",
        tmp_path / "raw",
        tmp_path / "segmented",
        tmp_path / "segment.json",
        tmp_path / "segment_details.json",
        tmp_path / "segment_images",
        project_root=ROOT,
    )
    assert meta["counts"]["segmenter"] >= 36, meta["counts"]  # of 40 cxr-real X-rays, nearly all plausible lungs
    from lungdx.model_file import load_segmenter_file

    segmenter = load_segmenter_file(tmp_path / "segmented" / SEGMENTER_FILE)
    held_out = score(segmenter, masked_pairs(parts["held_out"])[0], seed=239)
    kaggle = score(segmenter, masked_pairs(shared("cxr-kaggle-layout"))[0], seed=239)
    print(
        f"segmenter Dice: held-out patients {held_out['dice']} {held_out['dice_ci']} (n {held_out['n']}), "
        f"cxr-kaggle-layout {kaggle['dice']} (n {kaggle['n']})"
    )
    assert held_out["n"] == 86 and held_out["dice"] >= 0.90, held_out

    # A classifier (untrained: what is tested is the path, not its answers) carrying this segmenter.
    model = build_cnn(
        2, settings({"prepare.image_size": 64, "models.cnn.filters": [4, 8], "models.cnn.dense_units": 8}).train
    )
    path = tmp_path / "model.keras"
    save_model(
        model,
        path,
        ["COVID", "Normal"],
        64,
        "cnn",
        "crop",
        segmenter=(
            tmp_path / "segmented" / SEGMENTER_FILE,
            {
                "image_size": meta["segmenter"]["image_size"],
                "learned_from": "cxr-covid-masked train part",
                "test_dice": meta["segmenter"]["test_dice"],
            },
        ),
    )
    xrays = sorted((real / "COVID").glob("*.png"))[:12]
    results = predict_files(xrays, path, gradcam_dir=tmp_path / "cams")  # no masks given
    assert all("predicted" in r for r in results)
    assert sum(r["lungs"] == "drawn" for r in results) >= 10, [r.get("lungs_problem") for r in results]
    assert all(Path(r["gradcam"]).is_file() for r in results)

    no_masks = tmp_path / "no_masks"
    for cls in ("COVID", "Normal"):
        (no_masks / cls).mkdir(parents=True)
        for p in sorted((real / cls).glob("*.png"))[:15]:
            shutil.copyfile(p, no_masks / cls / p.name)
    found = evaluate_external(
        path, str(no_masks), metrics_path=tmp_path / "m.json", details_path=None, seed=239, layer=None
    )
    assert found["n_images"] == 30 and found["lungs_scored"] == "the lungs the model's segmenter drew"
    assert "lung_energy_share" in found and "dice" not in found["segmenter"]
    found = evaluate_external(path, str(parts["held_out"]), metrics_path=None, details_path=None, seed=239, layer=None)
    assert found["segmenter"]["dice"] == pytest.approx(
        held_out["dice"], abs=0.01
    )  # cut by the segmenter, scored by the masks
    assert json.loads((tmp_path / "m.json").read_text())["n_images"] == 30


FOUR_CLASSES = ["COVID", "Lung_Opacity", "Normal", "Viral Pneumonia"]


@pytest.mark.slow
def test_dvc_repro_on_real_four_class_xrays_reports_every_class_and_where_it_looks_in_the_drawn_lungs(tmp_path):
    """Real `dvc repro` on 12 real X-rays of each cxr-4class class (no lung masks there) at tiny
    settings, under prepare.lung_mask none with segment.train_source = cxr-covid-masked: the lungs
    are learned and drawn for scoring only, and every class, "Viral Pneumonia" with its space, is in
    reports/eval.json, the metrics and the Grad-CAM report, with its lung energy share."""
    import json
    import shutil

    from tests.helpers import TINY, copy_project, run

    four, masked = shared("cxr-4class"), shared("cxr-covid-masked")
    source = tmp_path / "source"
    for cls in FOUR_CLASSES:
        (source / cls).mkdir(parents=True)
        for path in sorted((four / cls).glob("*.png"))[:12]:
            shutil.copyfile(path, source / cls / path.name)
    tiny_segmenter = {
        "segment.image_size": 64,
        "segment.epochs": 15,
        "segment.patience": 15,
        "segment.filters": [8, 16, 32, 64],
        "segment.max_train_images": 120,
    }
    project = copy_project(
        tmp_path / "project",
        **TINY,
        **tiny_segmenter,
        **{"dataset.source": str(source), "segment.train_source": str(masked), "sample.test_size": 0.25},
    )
    run(["dvc", "repro"], project, timeout=600)

    def read(path):
        return json.loads((project / path).read_text(encoding="utf-8"))

    evaluation = read("reports/eval.json")
    assert list(evaluation["per_class"]) == FOUR_CLASSES and evaluation["n_test"] == 12  # 3 a class
    assert len(evaluation["confusion_matrix"]) == 4 and 0 <= read("metrics/eval.json")["accuracy"] <= 1
    segmented = read("metrics/segment.json")
    assert segmented["masks"]["dataset"] == 0 and segmented["masks"]["segmenter"] + segmented["masks"]["whole"] == 48
    assert read("data/prepared/meta.json")["lung_mask"] == "none"  # the classifier saw whole X-rays
    scores = read("reports/gradcam/scores.json")
    assert list(scores["classes"]) == FOUR_CLASSES and scores["lungs_known"] is True
    for cls, ex in scores["classes"].items():
        assert ex["n_test"] == 3 and ex["shown_correct"] + ex["shown_misclassified"] == 3, (cls, ex)
        assert bool(ex["note"]) == (not ex["correct"] or not ex["misclassified"])
        lungs = scores["lung_energy_share"]["per_class"][cls]
        assert lungs["n"] == 3 and 0 < lungs["chance"] < 1, (cls, lungs)
    headline = read("metrics/gradcam.json")
    assert 0 <= headline["lung_energy_share"] <= 1 and 0 < headline["lung_energy_chance"] < 1
    print("real 4-class tiny run, lung energy share per class:", scores["lung_energy_share"]["per_class"])
    page = (project / "reports" / "gradcam" / "index.html").read_text(encoding="utf-8")
    for cls in FOUR_CLASSES:
        assert page.count(f"<h2>{cls}</h2>") == 1 and f"<tr><th>{cls}</th><td>3</td>" in page
    assert page.count("<figure") == 12 and "No lungs known" not in page
