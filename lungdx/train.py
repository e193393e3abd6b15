"""Training: one loop for the CNN, the VGG19 head on cached features, and VGG19 fine-tuning.

Data stay uint8 on disk and in memory; each batch is converted to float32 on
its own, so the set is never materialised as float32 (the original held 2.4 GB
for 9415 images). dvclive logs loss and accuracy, train and validation, every
epoch; the best epoch on validation is kept (early stopping with restore).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .atomic import atomic_dir, atomic_path, write_json
from .datasets import batches, load_split, read_meta
from .errors import LungdxError
from .models import distribution_strategy, make_deterministic
from .params import model_settings

def live_logger(live):
    """Log every epoch's metrics to dvclive (train and val loss and accuracy)."""
    import keras

    class LiveLogger(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            for name, value in (logs or {}).items():
                live.log_metric(f"train/{name}" if not name.startswith("val_") else f"val/{name[4:]}",
                                float(value))
            live.next_step()

    return LiveLogger()


def fit(model, train_data, val_data, epochs: int, learning_rate: float, patience: int, live,
        warmup_epochs: int = 0) -> dict:
    """Compile, fit with early stopping on val_loss (best weights restored); return the history.

    `warmup_epochs` keeps early stopping off at first: the original CNN sits at chance level for
    ten to twenty epochs on small data before its loss starts to fall, and would be stopped there.
    """
    import keras

    model.compile(optimizer=keras.optimizers.Adam(learning_rate), loss="categorical_crossentropy",
                  metrics=["accuracy"])
    stop = keras.callbacks.EarlyStopping(monitor="val_loss", patience=patience, restore_best_weights=True,
                                         start_from_epoch=warmup_epochs)
    history = model.fit(train_data, validation_data=val_data, epochs=epochs, verbose=2,
                        callbacks=[stop, live_logger(live)])
    return history.history


def train(params: dict, prepared_dir="data/prepared", features_dir="data/features", out_dir="models",
          live_dir="dvclive/train") -> dict:
    """The train stage: fit the chosen architecture, save models/model.keras and models/classes.json."""
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
    # dvclive writes into a temporary folder that becomes live_dir only when training finished,
    # so a killed run never leaves a log that looks like a complete one.
    with distribution_strategy().scope(), atomic_dir(live_dir) as live_tmp, \
            Live(str(live_tmp), dvcyaml=False, save_dvc_exp=False) as live:
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
    out_dir = Path(out_dir)
    with atomic_path(out_dir / "model.keras", suffix=".keras") as tmp:
        model.save(tmp)
    write_json(out_dir / "classes.json", {"classes": classes, "image_size": cfg["image_size"],
                                          "architecture": cfg["model"]})
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
                   cfg["fine_tune_epochs"], cfg["fine_tune_learning_rate"], cfg["patience"], live)
        history = {k: history[k] + more[k] for k in history}
    return model, history
