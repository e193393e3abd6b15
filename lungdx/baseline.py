"""The `baseline` stage: a random forest on raw pixels (the original's 75% baseline) and
Gaussian naive Bayes for reference, on the same splits as the neural networks.

    metrics/baseline.json    the forest's headline numbers, under the model's key names
                             (accuracy, f1_macro, roc_auc_ovr, accuracy_ci, f1_macro_ci, ece;
                             lungdx.metrics), so they line up in dvc exp show
    reports/baseline.json    details of both: {random_forest: {...}, gaussian_nb: {...}}
    reports/baseline_predictions.csv   the forest's probabilities per test image, as the evaluate
                             stage's metrics/plots/predictions.csv: `lungdx compare` takes both

Images are downscaled to `baseline.image_size` (INTER_AREA) and flattened: a
forest on 65,536 raw pixels per image is slow and no better.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from .arrays import load_split, read_meta
from .atomic import atomic_path, write_json
from .compare import predictions_table
from .metrics import classification_metrics, headline
from .opencv import cv2
from .splits import test_paths

if TYPE_CHECKING:
    from sklearn.base import ClassifierMixin
    from sklearn.ensemble import RandomForestClassifier

    from .params import BaselineSettings


def pixels(images: np.ndarray, size: int) -> np.ndarray:
    """Flattened, downscaled pixels in 0..1 (float32 only at this small size)."""
    out = np.empty((len(images), size * size), np.float32)
    for i, img in enumerate(images):
        small = img if img.shape[0] == size else cv2.resize(np.asarray(img), (size, size), interpolation=cv2.INTER_AREA)
        out[i] = small.reshape(-1) / 255.0
    return out


def random_forest(n_estimators: int, seed: int, n_jobs: int = -1) -> RandomForestClassifier:
    """The forest, fitted on every core: each tree draws from its own seed (from `seed`), so the
    trees are the same whatever the number of threads."""
    from sklearn.ensemble import RandomForestClassifier

    return RandomForestClassifier(n_estimators=n_estimators, random_state=seed, n_jobs=n_jobs)


def probabilities(clf: ClassifierMixin, x: np.ndarray) -> np.ndarray:
    """Class probabilities in one thread (it sets a forest's n_jobs to 1): on several, a forest
    adds its trees' votes in the order the threads finish, and float sums in another order
    round differently."""
    if hasattr(clf, "n_jobs"):
        clf.set_params(n_jobs=1)
    return clf.predict_proba(x)


def baseline(
    settings: BaselineSettings,
    prepared_dir: str | Path,
    manifest: str | Path,
    metrics_path: str | Path,
    details_path: str | Path,
    predictions_path: str | Path,
) -> dict:
    """The baseline stage: fit both baselines on the train split; returns the details of each on
    the test split. The forest's probabilities per test image (paths from `manifest`) go to
    predictions_path."""
    from sklearn.naive_bayes import GaussianNB

    classes = read_meta(prepared_dir)["classes"]
    (train_x, train_y), (test_x, test_y) = (load_split(prepared_dir, s) for s in ("train", "test"))
    x_train, x_test = pixels(train_x, settings.image_size), pixels(test_x, settings.image_size)
    result, probs = {}, {}
    models = {"random_forest": random_forest(settings.n_estimators, settings.seed), "gaussian_nb": GaussianNB()}
    for name, clf in models.items():
        clf.fit(x_train, train_y)
        probs[name] = probabilities(clf, x_test)
        result[name] = classification_metrics(test_y, probs[name], classes, seed=settings.seed)
    table = predictions_table(test_paths(manifest), test_y, probs["random_forest"], classes)
    with atomic_path(predictions_path, suffix=".csv") as tmp:
        table.to_csv(tmp, index=False, lineterminator="\n")
    write_json(details_path, result)
    write_json(metrics_path, headline(result["random_forest"]))
    return result
