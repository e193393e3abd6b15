"""Training: one loop for the CNN, the VGG19 head on cached features, and VGG19 fine-tuning.

Data stay uint8 on disk and in memory; each batch is converted to float32 on
its own, so the set is never materialised as float32 (the original held 2.4 GB
for 9415 images). The best epoch on validation is kept (early stopping with restore).

dvclive's own Keras callback logs loss and accuracy, train and validation (`eval/`),
after every epoch, straight into the stage's dvclive folder: `dvc plots show`, the VS Code
extension and DVC Studio see the curves grow while training runs. Under `dvc repro` a
killed run leaves no trace that counts: DVC records outputs in dvc.lock only when the stage
succeeds, and deletes them before running the stage again. The model file, written last,
is atomic.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .datasets import batches, load_split, read_meta
from .errors import LungdxError
from .model_file import save_model
from .models import distribution_strategy, make_deterministic
from .params import model_settings


def fit(model, train_data, val_data, epochs: int, learning_rate: float, patience: int, live,
        warmup_epochs: int = 0, initial_epoch: int = 0) -> dict:
    """Compile, fit with early stopping on val_loss (best weights restored); return the history.

    Epochs are counted as Keras counts them: a second fit (fine-tuning) continues from
    `initial_epoch`, and so do the dvclive steps.

    `warmup_epochs` keeps early stopping off at first: the original CNN sits at chance level for
    ten to twenty epochs on small data before its loss starts to fall, and would be stopped there.
    """
    import keras
    from dvclive.keras import DVCLiveCallback

    model.compile(optimizer=keras.optimizers.Adam(learning_rate), loss="categorical_crossentropy",
                  metrics=["accuracy"])
    stop = keras.callbacks.EarlyStopping(monitor="val_loss", patience=patience, restore_best_weights=True,
                                         start_from_epoch=warmup_epochs)
    history = model.fit(train_data, validation_data=val_data, epochs=initial_epoch + epochs, verbose=2,
                        initial_epoch=initial_epoch, shuffle=False,  # the order is batches()' seeded one
                        callbacks=[stop, DVCLiveCallback(live=live)])
    return history.history


def train(params: dict, prepared_dir="data/prepared", features_dir="data/features",
          model_path="models/model.keras", live_dir="dvclive/train") -> dict:
    """The train stage: fit the chosen architecture, save it with its metadata to model_path."""
    cfg = model_settings(params)
    meta = read_meta(prepared_dir)
    if meta["image_size"] != cfg["image_size"]:
        raise LungdxError(f"data/prepared holds {meta['image_size']}px images but prepare.image_size is "
                          f"{cfg['image_size']}; run dvc repro so prepare runs again")
    classes, n = meta["classes"], len(meta["classes"])
    make_deterministic(cfg["seed"])
    from dvclive import Live

    train_x, train_y = load_split(prepared_dir, "train")
    val_x, val_y = load_split(prepared_dir, "val")
    # The context manager keeps the callback's end-of-fit from closing the log between two fits.
    with distribution_strategy().scope(), Live(str(live_dir), dvcyaml=False, save_dvc_exp=False) as live:
        live.log_params({k: v for k, v in cfg.items() if not isinstance(v, list)})
        if cfg["model"] == "cnn":
            from .models import build_cnn

            model = build_cnn(cfg["image_size"], n, cfg)
            history = fit(model, batches(train_x, train_y, n, cfg["batch_size"], cfg["seed"]),
                          batches(val_x, val_y, n, cfg["batch_size"]),
                          cfg["epochs"], cfg["learning_rate"], cfg["patience"], live, cfg["warmup_epochs"])
        else:
            model, history = _train_vgg19(cfg, n, features_dir, (train_x, train_y), (val_x, val_y), live)
        best = int(np.argmin(history["val_loss"]))
        summary = {"best_epoch": best + 1, "epochs_run": len(history["val_loss"]),
                   "best_val_loss": float(history["val_loss"][best]),
                   "best_val_accuracy": float(history["val_accuracy"][best])}
        for name, value in summary.items():
            live.summary[name] = value
    save_model(model, model_path, classes, cfg["image_size"], cfg["model"])
    return summary


def _train_vgg19(cfg, n_classes, features_dir, train, val, live):
    """Head on cached base features; then optionally fine-tune the last blocks on images."""
    from .features import load_features
    from .models import build_head_only, build_vgg19, unfreeze_last_blocks

    feats = load_features(features_dir, cfg)
    head = build_head_only(feats["train"].shape[1], n_classes, cfg)
    history = fit(head, batches(feats["train"], train[1], n_classes, cfg["batch_size"], cfg["seed"]),
                  batches(feats["val"], val[1], n_classes, cfg["batch_size"]),
                  cfg["epochs"], cfg["learning_rate"], cfg["patience"], live, cfg["warmup_epochs"])

    # One end-to-end model for evaluate, Grad-CAM and predict: the cached base's weights plus the head.
    model, base = build_vgg19(cfg["image_size"], n_classes, cfg, weights=None)
    base.load_weights(Path(features_dir) / "base.weights.h5")
    for layer in head.layers:
        if layer.weights:
            model.get_layer(layer.name).set_weights(layer.get_weights())

    if cfg["fine_tune_blocks"]:
        # Caching cannot apply here: the unfrozen blocks change, so every epoch runs the base on images.
        unfreeze_last_blocks(base, cfg["fine_tune_blocks"])
        more = fit(model, batches(train[0], train[1], n_classes, cfg["batch_size"], cfg["seed"] + 1),
                   batches(val[0], val[1], n_classes, cfg["batch_size"]),
                   cfg["fine_tune_epochs"], cfg["fine_tune_learning_rate"], cfg["patience"], live,
                   initial_epoch=len(history["val_loss"]))
        history = {k: history[k] + more[k] for k in history}
    return model, history
