"""The synthetic default: deterministic, aligned masks, findings that only show spatially."""

import numpy as np
import pytest

from lungdx.images import read_gray
from lungdx.synthetic import CLASSES, generate_dataset, generate_image


def test_same_seed_gives_the_same_image_and_other_seed_another():
    a = generate_image(7, "COVID", 3, 96)
    b = generate_image(7, "COVID", 3, 96)
    c = generate_image(8, "COVID", 3, 96)
    assert all(np.array_equal(x, y) for x, y in zip(a, b, strict=True))
    assert not np.array_equal(a[0], c[0])


@pytest.mark.parametrize("cls", CLASSES)
def test_lesion_masks_are_empty_for_normal_and_inside_the_lungs_otherwise(cls):
    for i in range(5):
        img, lung, lesion = generate_image(239, cls, i, 128)
        assert img.dtype == lung.dtype == lesion.dtype == np.uint8
        assert img.shape == lung.shape == lesion.shape == (128, 128)
        assert set(np.unique(lung)) <= {0, 255} and set(np.unique(lesion)) <= {0, 255}
        assert 0.08 < (lung > 0).mean() < 0.45, "two lung fields, not the whole image"
        if cls == "Normal":
            assert not lesion.any()
        else:
            assert lesion.any()
            inside = (lesion > 0) & (lung > 0)
            assert inside.sum() >= 0.9 * (lesion > 0).sum(), "lesions lie in the lungs"


def test_lung_masks_are_aligned_with_the_dark_lung_fields():
    for i in range(5):
        img, lung, _ = generate_image(239, "Normal", i, 128)
        body = img[32:120, 16:112]
        assert img[lung > 0].mean() < body.mean() - 15, "air in the lungs is darker than the rest of the thorax"


def test_findings_are_bright_where_the_lesion_mask_says():
    for cls in ("Lung_Opacity", "COVID"):
        img, lung, lesion = generate_image(239, cls, 0, 128)
        assert img[lesion > 0].mean() > img[(lung > 0) & (lesion == 0)].mean() + 10


def test_global_statistics_do_not_separate_the_classes():
    """Mean and contrast are drawn independently of the class; a forest on them stays weak."""
    from sklearn.ensemble import RandomForestClassifier
    from sklearn.model_selection import cross_val_score

    feats, labels = [], []
    for k, cls in enumerate(CLASSES):
        for i in range(60):
            img = generate_image(5, cls, i, 96)[0].astype(np.float32)
            hist = np.histogram(img, bins=8, range=(0, 255))[0] / img.size
            feats.append([img.mean(), img.std(), *hist])
            labels.append(k)
    means = np.array(feats)[:, 0].reshape(4, 60).mean(1)
    assert means.max() - means.min() < 5, f"class mean brightness differs: {means}"
    acc = cross_val_score(RandomForestClassifier(100, random_state=0), feats, labels, cv=4).mean()
    assert acc < 0.5, f"global statistics alone reach {acc:.2f} (chance 0.25)"


def test_dataset_is_written_in_the_kaggle_layout(tmp_path):
    generate_dataset(tmp_path, per_class=3, seed=1, size=64, workers=1)
    for cls in CLASSES:
        for sub in ("images", "masks", "lesions"):
            names = sorted(p.name for p in (tmp_path / cls / sub).iterdir())
            assert names == [f"{cls}-{i}.png" for i in (1, 2, 3)]
    img = read_gray(tmp_path / "Viral Pneumonia" / "images" / "Viral Pneumonia-2.png")
    assert np.array_equal(img, generate_image(1, "Viral Pneumonia", 1, 64)[0])
