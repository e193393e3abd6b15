"""`lungdx compare A B`: is B better than A on the same test images, beyond chance?

`dvc metrics diff` shows two accuracies side by side; on a few hundred test images a gap of a
few points can be luck. Two runs scored on the same test images can be compared image by image,
which is far more sensitive than comparing two intervals:

- McNemar's exact test counts only the images the two models disagree on (A right and B wrong,
  or the reverse) and asks whether the split is further from 50:50 than chance makes it;
- a paired bootstrap resamples the test images, the same draw for both models, and gives the
  difference B - A in accuracy and in macro F1 with its 95% interval and a p-value.

A and B are each a predictions file (metrics/plots/predictions.csv: path, actual, predicted,
...), or a git revision or experiment name whose predictions dvc can read (from the cache).
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pandas as pd

from .errors import LungdxError
from .images import UnreadableImage, read_bytes
from .stats import LEVEL, RESAMPLES, accuracy, f1_macro, mcnemar, paired_bootstrap

PREDICTIONS = "metrics/plots/predictions.csv"
ALPHA = 1 - LEVEL  # a difference is "beyond chance" below this p-value


def predictions_table(paths: list[str], y_true: np.ndarray, probs: np.ndarray, classes: list[str]) -> pd.DataFrame:
    """One row per test image, as compare reads it: path, actual, predicted, p_<class>... (the
    evaluate stage's metrics/plots/predictions.csv, the baseline stage's forest predictions)."""
    table = pd.DataFrame(
        {"path": paths, "actual": [classes[i] for i in y_true], "predicted": [classes[i] for i in probs.argmax(1)]}
    )
    for i, c in enumerate(classes):
        table[f"p_{c}"] = probs[:, i].round(6)
    return table


def read_predictions(which: str, repo: str | Path = ".") -> pd.DataFrame:
    """The predictions of `which`: a predictions file, or a git revision or experiment name."""
    from io import StringIO

    if not which.strip():
        raise LungdxError("an empty name: give a predictions file, a git revision or an experiment name")
    if os.path.lexists(which) and not Path(which).is_dir():
        try:
            data = read_bytes(which)  # a regular file only (no FIFO, no /dev/zero), 256 MiB at most
        except UnreadableImage as exc:
            raise LungdxError(f"{which}: {exc}") from exc
        where = which
    else:
        data, where = _read_at_revision(which, repo), f"{which}:{PREDICTIONS}"
    try:
        table = pd.read_csv(
            StringIO(data.decode("utf-8") if isinstance(data, bytes) else data), keep_default_na=False, dtype=str
        )
    except (ValueError, UnicodeDecodeError, pd.errors.ParserError) as exc:
        raise LungdxError(f"{where}: not a predictions table ({str(exc).splitlines()[0]})") from exc
    missing = {"path", "actual", "predicted"} - set(table.columns)
    if missing:
        raise LungdxError(
            f"{where}: not a predictions table (no {', '.join(sorted(missing))} column); give "
            f"{PREDICTIONS} as the evaluate stage writes it"
        )
    if table.empty:
        raise LungdxError(f"{where}: no test images in it")
    blank = (table[["path", "actual", "predicted"]] == "").any(axis=1)
    if blank.any():
        raise LungdxError(f"{where}: row {int(blank.idxmax()) + 2} has an empty path, actual or predicted value")
    if table["path"].duplicated().any():
        raise LungdxError(
            f"{where}: the same image is listed twice ({table['path'][table['path'].duplicated()].iloc[0]})"
        )
    return table


def _read_at_revision(rev: str, repo: str | Path) -> bytes:
    """PREDICTIONS at a git revision or a dvc experiment name, read by dvc (from its cache)."""
    import dvc.api
    from dvc.exceptions import DvcException
    from dvc_data.index.index import DataIndexError
    from scmrepo.exceptions import SCMError

    # What dvc and its libraries raise for a name that is not there, or outputs missing from the
    # cache; each means the same here, and the user gets one line naming `rev`. Anything else is a bug.
    # scmrepo raises AttributeError for a name of a tree or a file instead of a commit (HEAD:path).
    not_found = (DvcException, SCMError, DataIndexError, OSError, AttributeError)
    refs = [rev]
    try:
        from dvc.repo import Repo
        from dvc.repo.experiments.utils import resolve_name

        with Repo(str(repo)) as project:
            found = resolve_name(project.scm, rev).get(rev)
        if found is not None:
            refs.insert(0, str(found))
    except not_found:  # not a dvc project, or not an experiment name: try a git revision
        pass
    problems = []
    for ref in refs:
        try:
            return dvc.api.read(PREDICTIONS, repo=str(repo), rev=ref, mode="rb")  # decoded as a file's are
        except not_found as exc:
            problems.append(f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}")
    raise LungdxError(
        f"{rev}: neither a predictions file nor a revision or experiment whose {PREDICTIONS} dvc can "
        f"read ({problems[-1]}); a revision's outputs must be in the cache (dvc pull; dvc exp pull for an "
        "experiment)"
    )


def paired(
    a: pd.DataFrame, b: pd.DataFrame, names: tuple[str, str] = ("A", "B")
) -> tuple[np.ndarray, np.ndarray, np.ndarray, list[str]]:
    """(y_true, pred_a, pred_b, classes) over the same test images in the same order; refuses two
    tables of different images or labels: then the runs used different test splits."""
    only_a, only_b = set(a["path"]) - set(b["path"]), set(b["path"]) - set(a["path"])
    if only_a or only_b:
        raise LungdxError(
            f"{names[0]} and {names[1]} were scored on different test images ({len(only_a)} only in "
            f"{names[0]}, {len(only_b)} only in {names[1]}); a paired comparison needs the same test "
            "split: the same dataset, seed and sample params"
        )
    b = b.set_index("path").loc[a["path"]].reset_index()
    differ = a["actual"].to_numpy() != b["actual"].to_numpy()
    if differ.any():
        raise LungdxError(
            f"{names[0]} and {names[1]} give different true classes for {int(differ.sum())} test "
            f"images (e.g. {a['path'][differ].iloc[0]}); were they trained on different datasets?"
        )
    classes = sorted(set(a["actual"]) | set(a["predicted"]) | set(b["predicted"]))
    code = {c: i for i, c in enumerate(classes)}
    return (
        a["actual"].map(code).to_numpy(),
        a["predicted"].map(code).to_numpy(),
        b["predicted"].map(code).to_numpy(),
        classes,
    )


def compare(
    a: pd.DataFrame, b: pd.DataFrame, seed: int = 0, resamples: int = RESAMPLES, names: tuple[str, str] = ("A", "B")
) -> dict:
    """B against A on the same test images: each one's accuracy and macro F1, the differences
    B - A with paired bootstrap intervals and p-values, and McNemar's exact test."""
    y_true, pred_a, pred_b, classes = paired(a, b, names)
    k = len(classes)

    def f1(t: np.ndarray, p: np.ndarray) -> np.ndarray:
        return f1_macro(t, p, k)

    out: dict[str, object] = {"n_images": int(len(y_true)), "classes": classes}
    for name, statistic in (("accuracy", accuracy), ("f1_macro", f1)):
        diff = paired_bootstrap(y_true, pred_a, pred_b, statistic, resamples, seed=seed)
        out[name] = {"a": float(statistic(y_true, pred_a)), "b": float(statistic(y_true, pred_b)), **diff}
    test = mcnemar(pred_a == y_true, pred_b == y_true)
    out["mcnemar"] = test
    out["differs"] = bool(test["p_value"] < ALPHA)
    out["bootstrap"] = {"resamples": resamples, "seed": seed, "level": LEVEL}
    return out
