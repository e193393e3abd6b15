"""Training: one loop for the CNN, the VGG19 head on cached features, and VGG19 fine-tuning.

Data stay uint8 on disk and in memory; each batch is converted to float32 on
its own, so the set is never materialised as float32 (the original held 2.4 GB
for 9415 images). The best epoch on validation is kept (early stopping with restore).

dvclive's own Keras callback logs loss and accuracy, train and validation (`eval/`),
after every epoch, straight into the stage's dvclive folder, with step = the epoch's number
from 1 as Keras prints it (fine-tuning goes on counting): `dvc plots show`, the VS Code
extension and DVC Studio see the curves grow while training runs. Under `dvc repro` a
killed run leaves no trace that counts: DVC records outputs in dvc.lock only when the stage
succeeds, and deletes them before running the stage again. The model file, written last,
is atomic.

A training that goes wrong leaves nothing that looks complete: the loss is checked after
every batch, and the first nan or inf stops the run with one line naming the epoch, the
batch and the learning rate to lower; the final model's outputs on the validation images
must be finite before it is saved; and whatever stops train() (that error, a full disk,
Ctrl-C) removes the stage's dvclive folder, once dvclive has closed it, and writes no model.
"""

from __future__ import annotations

import dataclasses
import json
import shutil
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from .arrays import NonFiniteOutputs, batches, epoch_size, load_split, predict, read_meta, steps_per_epoch
from .errors import LungdxError
from .model_file import save_model
from .models import distribution_strategy, lower_rate_advice, make_deterministic, stop_on_nonfinite_loss
from .splits import SEGMENTER_FILE

if TYPE_CHECKING:
    import keras
    from dvclive import Live

    from .params import ModelSettings

    Split = tuple[np.ndarray, np.ndarray]  # (inputs, labels)
    # What shows a trained model's validation outputs: a model, its inputs, and the field of the
    # settings holding the learning rate that shaped it.
    Check = tuple[keras.Model, np.ndarray, str]


# one idea: one compile-and-fit, with the levers that shape it
def fit(
    model: keras.Model,
    train: Split,
    val: Split,
    n_classes: int,
    settings: ModelSettings,
    live: Live,
    *,
    seed: int,
    epochs: int,
    rate: str,
    warmup_epochs: int = 0,
    initial_epoch: int = 0,
) -> dict[str, list[float]]:
    """Compile, fit (x, y) `train` with early stopping on `val`'s loss (best weights restored), in
    batches shuffled from `seed`, at the learning rate in the field `rate` of `settings`; return the
    history. A nan or inf loss ends the fit with a LungdxError that names that rate's key.

    Epochs are counted as Keras counts them: a second fit (fine-tuning) continues from
    `initial_epoch`, and so do the dvclive steps (which train() starts at 1).

    `warmup_epochs` keeps early stopping off at first: the original CNN sits at chance level for
    ten to twenty epochs on small data before its loss starts to fall, and would be stopped there.
    """
    import keras

    steps = steps_per_epoch(epoch_size(train[1], settings.balanced_batches), settings.batch_size)
    model.compile(
        optimizer=keras.optimizers.Adam(learning_rate_schedule(settings, rate, epochs * steps)),
        loss=keras.losses.CategoricalCrossentropy(label_smoothing=settings.label_smoothing),
        metrics=["accuracy"],
    )
    history = model.fit(
        batches(*train, n_classes, settings.batch_size, seed, epochs=epochs, balanced=settings.balanced_batches),
        steps_per_epoch=steps,
        validation_data=batches(*val, n_classes, settings.batch_size),
        epochs=initial_epoch + epochs,
        verbose=2,
        initial_epoch=initial_epoch,
        shuffle=False,  # the order is batches()' seeded one
        callbacks=_callbacks(settings, rate, warmup_epochs, live),
    )
    return history.history


def learning_rate_schedule(
    settings: ModelSettings, rate: str, total_steps: int
) -> float | keras.optimizers.schedules.LearningRateSchedule:
    """The rate in the field `rate` of `settings` as settings.lr_schedule shapes it: constant (and
    plateau, whose halving is a callback), or cosine: from that rate down to 0 over `total_steps`
    (the fit's epochs, though early stopping may end it sooner)."""
    import keras

    initial = getattr(settings, rate)
    if settings.lr_schedule == "cosine":
        return keras.optimizers.schedules.CosineDecay(initial, decay_steps=max(1, total_steps))
    return initial


def _callbacks(settings: ModelSettings, rate: str, warmup_epochs: int, live: Live) -> list[keras.callbacks.Callback]:
    """What ends a fit and what logs it: the first nan or inf loss, early stopping (after the
    warmup, keeping the best weights), under lr_schedule plateau the halving of the rate when the
    validation loss stalls for a third of the patience, and dvclive's logging of every epoch."""
    import keras
    from dvclive.keras import DVCLiveCallback

    stop = keras.callbacks.EarlyStopping(
        monitor="val_loss", patience=settings.patience, restore_best_weights=True, start_from_epoch=warmup_epochs
    )
    callbacks = [stop_on_nonfinite_loss(settings.key(rate), getattr(settings, rate)), stop]
    if settings.lr_schedule == "plateau":
        rate_now = getattr(settings, rate)
        callbacks.append(
            keras.callbacks.ReduceLROnPlateau(
                monitor="val_loss", factor=0.5, patience=max(1, settings.patience // 3), min_lr=rate_now / 64
            )
        )
    return [*callbacks, DVCLiveCallback(live=live)]


# one idea: the train stage, from the prepared splits to the saved model, cleaning up on failure
def train(
    settings: ModelSettings,
    prepared_dir: str | Path,
    features_dir: str | Path,
    model_path: str | Path,
    live_dir: str | Path,
    segmented_dir: str | Path | None = None,
) -> dict:
    """The train stage: fit the architecture of `settings` on the prepared splits, save it with its
    metadata to model_path; returns the best epoch's summary. A model of images cut to their lungs
    carries the segment stage's segmenter (from segmented_dir)."""
    meta = read_meta(prepared_dir)
    segmenter = carried_segmenter(segmented_dir, meta["lung_mask"])
    if meta["image_size"] != settings.image_size:
        raise LungdxError(
            f"{prepared_dir} holds {meta['image_size']}px images but {settings.key('image_size')} is "
            f"{settings.image_size}; run dvc repro so prepare runs again"
        )
    classes, n = meta["classes"], len(meta["classes"])
    make_deterministic(settings.seed)
    from dvclive import Live

    train_split, val_split = load_split(prepared_dir, "train"), load_split(prepared_dir, "val")
    try:
        # The context manager keeps the callback's end-of-fit from closing the log between two fits.
        with distribution_strategy().scope(), Live(str(live_dir), dvcyaml=False, save_dvc_exp=False) as live:
            live.log_params(logged_params(settings))
            live.step = 1  # dvclive counts from 0; its callback then adds 1 per epoch, across both fits
            model, history, check = _fit_architecture(settings, n, features_dir, train_split, val_split, live)
            summary = _best_epoch(history)
            for name, value in summary.items():
                live.summary[name] = value
        _check_outputs_finite(*check, settings)
        save_model(
            model,
            model_path,
            classes,
            settings.image_size,
            settings.architecture,
            meta["lung_mask"],
            segmenter,
            tta=settings.tta,
        )
    except BaseException:
        # Live has closed by now (its context ended first): remove what it wrote, so that a
        # failed run leaves no curves that look like a finished training. No model was saved.
        shutil.rmtree(live_dir, ignore_errors=True)
        raise
    return summary


def _best_epoch(history: dict[str, list[float]]) -> dict:
    """The summary of the epoch of least validation loss (a nan loss is never the least): its number
    from 1, the epochs run, its validation loss and accuracy."""
    val_loss = np.asarray(history["val_loss"], dtype=float)
    best = int(np.argmin(np.where(np.isfinite(val_loss), val_loss, np.inf)))  # argmin takes nan for least
    return {
        "best_epoch": best + 1,
        "epochs_run": len(history["val_loss"]),
        "best_val_loss": float(history["val_loss"][best]),
        "best_val_accuracy": float(history["val_accuracy"][best]),
    }


def _fit_architecture(
    settings: ModelSettings, n_classes: int, features_dir: str | Path, train: Split, val: Split, live: Live
) -> tuple[keras.Model, dict[str, list[float]], Check]:
    """The model of settings.architecture, trained; its history; what shows its validation outputs."""
    if settings.architecture != "cnn":
        return _train_vgg19(settings, n_classes, features_dir, train, val, live)
    from .models import build_cnn

    model = build_cnn(n_classes, settings)
    history = fit(
        model,
        train,
        val,
        n_classes,
        settings,
        live,
        seed=settings.seed,
        epochs=settings.epochs,
        rate="learning_rate",
        warmup_epochs=settings.warmup_epochs,
    )
    return model, history, (model, val[0], "learning_rate")


def carried_segmenter(segmented_dir: str | Path | None, lung_mask: str) -> tuple[Path, dict] | None:
    """(the segmenter's file, what it is) that a model of lung focus crop or mask carries; None for none."""
    if lung_mask == "none":
        return None
    if segmented_dir is None:
        raise LungdxError(
            f"a model of lung focus {lung_mask} carries its lung segmenter: give the segment stage's "
            "folder (data/segmented)"
        )
    path, meta_path = Path(segmented_dir) / SEGMENTER_FILE, Path(segmented_dir) / "meta.json"
    try:
        trained = json.loads(meta_path.read_text(encoding="utf-8"))["segmenter"]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise LungdxError(f"{meta_path}: not readable ({exc}); run dvc repro so the segment stage runs") from exc
    if not trained or not path.is_file():
        raise LungdxError(
            f"{segmented_dir} holds no lung segmenter, but the prepared images are cut to their lungs "
            f"(lung focus {lung_mask}); run dvc repro so the segment stage runs again"
        )
    return path, {
        "image_size": trained["image_size"],
        "learned_from": trained["learned_from"],
        "test_dice": trained["test_dice"],
    }


def logged_params(settings: ModelSettings) -> dict:
    """The settings as dvclive logs them beside the curves: `model`, then its own keys (a cnn has no
    weights or fine-tuning), augmentation as augment.<name>; lists (filters) left out."""
    values = dataclasses.asdict(settings)
    values["model"] = values.pop("architecture")
    vgg19_only = ("weights", "fine_tune_blocks", "fine_tune_epochs", "fine_tune_learning_rate")
    logged = {"model": values.pop("model")}
    other = vgg19_only if settings.architecture == "cnn" else ("filters", "batch_norm", "pooling", "tta")
    logged.update({k: v for k, v in values.items() if not isinstance(v, (tuple, dict)) and k not in other})
    logged.update({f"augment.{k}": v for k, v in values["augment"].items()})
    return logged


def _check_outputs_finite(model: keras.Model, x: np.ndarray, rate: str, settings: ModelSettings) -> None:
    """Refuse to save a model whose outputs on the validation inputs are not all finite; `rate`
    names the field of `settings` (the learning rate) that shaped them."""
    try:
        predict(model, x)
    except NonFiniteOutputs as exc:
        raise LungdxError(
            f"training diverged: the trained model's outputs are not finite for {exc.bad} of "
            f"{exc.total} validation images; "
            f"{lower_rate_advice(settings.key(rate), getattr(settings, rate))}; "
            "no model was saved"
        ) from exc


def _train_vgg19(
    settings: ModelSettings, n_classes: int, features_dir: str | Path, train: Split, val: Split, live: Live
) -> tuple[keras.Model, dict[str, list[float]], Check]:
    """Head on cached base features; then optionally fine-tune the last blocks on images.

    Returns the end-to-end model, the history, and what shows its validation outputs
    (a model, its inputs, the learning rate that shaped it) for the check before saving."""
    from .feature_cache import load_features
    from .models import build_head_only, unfreeze_last_blocks

    feats = load_features(features_dir, settings.image_size)
    head = build_head_only(feats["train"].shape[1], n_classes, settings)
    history = fit(
        head,
        (feats["train"], train[1]),
        (feats["val"], val[1]),
        n_classes,
        settings,
        live,
        seed=settings.seed,
        epochs=settings.epochs,
        rate="learning_rate",
        warmup_epochs=settings.warmup_epochs,
    )
    # The head on the cached validation features gives the end-to-end model's outputs, one pass of the base fewer.
    check: Check = (head, feats["val"], "learning_rate")
    model, base = _end_to_end(head, n_classes, settings, features_dir)
    if settings.fine_tune_blocks:
        # Caching cannot apply here: the unfrozen blocks change, so every epoch runs the base on images.
        unfreeze_last_blocks(base, settings.fine_tune_blocks)
        history = _fine_tune(model, n_classes, settings, train, val, live, history)
        check = (model, val[0], "fine_tune_learning_rate")
    return model, history, check


def _end_to_end(
    head: keras.Model, n_classes: int, settings: ModelSettings, features_dir: str | Path
) -> tuple[keras.Model, keras.Model]:
    """One model for evaluate, Grad-CAM and predict: the cached base's weights plus the trained
    `head`'s; returns it and its base."""
    from .models import build_vgg19

    model, base = build_vgg19(n_classes, settings, weights=None)
    base.load_weights(Path(features_dir) / "base.weights.h5")
    for layer in head.layers:
        if layer.weights:
            model.get_layer(layer.name).set_weights(layer.get_weights())
    return model, base


def _fine_tune(
    model: keras.Model,
    n_classes: int,
    settings: ModelSettings,
    train: Split,
    val: Split,
    live: Live,
    history: dict[str, list[float]],
) -> dict[str, list[float]]:
    """Fit the end-to-end `model` (its last blocks unfrozen) on images, its epochs counted on from
    the head's `history`; returns both fits' history."""
    assert settings.fine_tune_epochs is not None  # params sets it for every vgg19
    more = fit(
        model,
        train,
        val,
        n_classes,
        settings,
        live,
        seed=settings.seed + 1,
        epochs=settings.fine_tune_epochs,
        rate="fine_tune_learning_rate",
        initial_epoch=len(history["val_loss"]),
    )
    return {k: history[k] + more[k] for k in history}
