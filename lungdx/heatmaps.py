"""Class activation heatmaps for both architectures.

Grad-CAM (Selvaraju et al.; the keras.io example) weights each feature map A_k
of a conv layer by the spatial *mean* of d(logit_c)/dA_k. That mean is exact
when the maps reach the classifier through global average pooling (our VGG19
head), but the original CNN flattens its maps into Dense layers, where every
position has its own weights: averaging them mixes positions, and on the
synthetic data the heatmap peak then landed on the lesion in only 18% of the
test images. We therefore weight each position by its own gradient,
ReLU(sum_k dlogit_c/dA_k * A_k) (HiResCAM, Draelos & Carin 2020): for a GAP
head this is Grad-CAM times a constant, for a flatten head it is faithful.

We take the gradient of the *logit* (the softmax's input), not the probability:
a confident prediction has a saturated softmax whose gradient all but
vanishes. The logit is recomputed from the last Dense layer's weights, so the
saved model needs no change.

The default layer is the last conv layer whose grid is at least MIN_GRID cells
wide: a heatmap upsampled from an 8x8 grid cannot point at a lesion 1/20 of
the image wide (cnn at 128 px: conv4; at 256 px: conv5; vgg19 at 256 px:
block5_conv4).

For the report: `overlay` paints a heatmap over its X-ray, `draw_outline` adds a
mask's outline on top, and `colorbar` is the colour scale of both.

Scoring heatmaps against masks, for the gradcam and external stages: `mask_scores` gives the
share of Grad-CAM energy inside the lungs (with its bootstrap interval) and the pointing game
on lesions, each beside its chance level; `headline_scores` the numbers of metrics/gradcam.json.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, NamedTuple

import numpy as np

from .arrays import batch_outputs
from .console import import_tensorflow, progress
from .errors import LungdxError
from .metrics import headline
from .opencv import cv2
from .stats import mean_interval

if TYPE_CHECKING:
    from collections.abc import Callable

    import keras

COLORMAP = cv2.COLORMAP_INFERNO  # perceptually uniform, readable in grayscale print
OUTLINE_BGR = (255, 255, 0)  # cyan: a hue inferno never takes, so it stands out on gray and on every heat level
MIN_GRID = 16


def conv_layers(model: keras.Model) -> list:
    import keras

    return [layer for layer in model.layers if isinstance(layer, keras.layers.Conv2D)]


def default_layer(model: keras.Model) -> str:
    """The last conv layer with a grid of at least MIN_GRID cells (else the last conv layer)."""
    convs = conv_layers(model)
    if not convs:
        raise LungdxError(f"model '{model.name}' has no conv layer: Grad-CAM needs one")
    fine = [layer for layer in convs if layer.output.shape[1] is not None and layer.output.shape[1] >= MIN_GRID]
    return (fine or convs)[-1].name


PREDICTED = -1  # in place of a class: the heatmap of the class the model predicts for that image


class Explained(NamedTuple):
    """One pass of a model over images: its probabilities, and one heatmap per image (at the conv
    layer's resolution, scaled to its peak)."""

    probabilities: np.ndarray
    heatmaps: np.ndarray


class GradCam:
    """Heatmaps of one model at one conv layer (default: see default_layer).

    One graph-compiled pass per batch gives the probabilities and a heatmap per image: the model
    is split at the chosen layer, its front runs forward once and the gradient goes back only
    through the layers after it (for VGG19's block5_conv4: pooling and the head), so a batch
    costs about one `predict` (benchmarks/gradcam_speed.py).

    `tta`: a model file's test-time augmentation (models.cnn.tta): the probabilities, and the class
    PREDICTED picks, are those of arrays.predict(tta=True), the mean over the image and its shifted
    copies, as the evaluate stage and `lungdx predict` give them; the heatmap is the image's own."""

    def __init__(self, model: keras.Model, layer: str | None = None, tta: bool = False) -> None:
        tf = import_tensorflow()
        self.layer = _checked_layer(model, layer)
        self._model, self._tta = model, tta
        shape = (None, *model.inputs[0].shape[1:])
        self._one_batch = tf.function(
            _batch_function(model, self.layer),
            input_signature=[tf.TensorSpec(shape, tf.float32), tf.TensorSpec([None], tf.int32)],
        )

    def explain(
        self, images: np.ndarray, classes: np.ndarray, batch_size: int = 32, desc: str | None = None
    ) -> Explained:
        """Every image's probabilities and its heatmap for classes[i] (PREDICTED: the predicted
        class), batch by batch from (memory-mapped) uint8 images; with `desc`, under a progress bar."""
        probs, heat = [], []
        starts = range(0, len(images), batch_size)
        for start in starts if desc is None else progress(starts, total=len(starts), desc=desc):
            x = np.asarray(images[start : start + batch_size], np.float32)
            x = x[..., None] if x.ndim == 3 else x
            wanted = np.asarray(classes[start : start + batch_size], np.int32)
            if self._tta:  # the shifted copies' mean decides the probabilities and the predicted class
                p = batch_outputs(self._model, x, tta=True)
                _, h = self._one_batch(x, np.where(wanted == PREDICTED, p.argmax(1), wanted).astype(np.int32))
            else:
                p, h = self._one_batch(x, wanted)
            probs.append(np.asarray(p))
            heat.append(h.numpy())
        return Explained(np.concatenate(probs), np.concatenate(heat))

    def heatmaps(self, images: np.ndarray, classes: np.ndarray) -> np.ndarray:
        """Float heatmaps in [0, 1] at the conv layer's resolution, one per image, for classes[i]."""
        return self.explain(images, classes).heatmaps


def _checked_layer(model: keras.Model, layer: str | None) -> str:
    """`layer` (None: default_layer's), refused unless it is a conv layer of `model`."""
    chosen = layer or default_layer(model)
    names = [conv.name for conv in conv_layers(model)]
    if chosen not in names:
        raise LungdxError(
            f"Grad-CAM layer {layer!r}: not a conv layer of model '{model.name}', whose conv "
            f"layers are {', '.join(names)}"
        )
    return chosen


def _batch_function(model: keras.Model, layer: str) -> Callable[[Any, Any], tuple[Any, Any]]:
    """The function of one batch, (images, classes) -> (probabilities, heatmaps), for tf.function.
    The model is split at `layer` where it can be: its front runs forward once and the gradient
    goes back through the tail only; else the whole model runs under the tape."""
    import keras

    tf = import_tensorflow()
    target = model.get_layer(layer)
    dense = model.layers[-1]  # the softmax layer: its logits are recomputed from its input
    kernel, bias = dense.kernel, dense.bias
    try:
        front = keras.Model(model.inputs[0], target.output)
        tail = keras.Model(target.output, dense.input)  # new graph nodes over the same layers and weights
    except ValueError:  # a path to the head goes around the layer (a skip connection, a shared layer)
        both = keras.Model(model.inputs[0], [target.output, dense.input])

        def one_batch(x: Any, classes: Any) -> tuple[Any, Any]:  # the whole model under the tape: slower, but any graph
            with tf.GradientTape() as tape:
                maps, features = both(x, training=False)
                tape.watch(maps)
                logits = tf.matmul(features, kernel) + bias
                score = _class_score(logits, classes)
            return _outputs(tape.gradient(score, maps), maps, logits, layer, model.name)
    else:

        def one_batch(x: Any, classes: Any) -> tuple[Any, Any]:  # the front once, the gradient through the tail only
            maps = front(x, training=False)
            with tf.GradientTape(watch_accessed_variables=False) as tape:
                tape.watch(maps)
                logits = tf.matmul(tail(maps, training=False), kernel) + bias
                score = _class_score(logits, classes)
            return _outputs(tape.gradient(score, maps), maps, logits, layer, model.name)

    return one_batch


def _class_score(logits: Any, classes: Any) -> Any:
    """The logits of each image's class (PREDICTED: its largest), summed over the batch: an image's
    logits depend on its own maps alone, so the gradient of the sum holds each image's own gradient."""
    tf = import_tensorflow()
    classes = tf.where(classes == PREDICTED, tf.argmax(logits, axis=1, output_type=tf.int32), classes)
    return tf.reduce_sum(tf.gather(logits, classes, axis=1, batch_dims=1))


def _outputs(grads: Any, maps: Any, logits: Any, layer: str, model_name: str) -> tuple[Any, Any]:
    """(probabilities, heatmaps scaled to their peak) from the class score's gradient at the maps."""
    tf = import_tensorflow()
    if grads is None:  # seen while tracing: nothing trainable links the layer to the classifier
        raise LungdxError(
            f"Grad-CAM layer {layer!r}: its maps do not reach the classifier of model "
            f"'{model_name}'; choose a conv layer on the way to it"
        )
    cam = tf.nn.relu(tf.reduce_sum(grads * maps, axis=-1))
    peak = tf.reduce_max(cam, axis=[1, 2], keepdims=True)
    return tf.nn.softmax(logits), tf.where(peak > 0, cam / tf.maximum(peak, 1e-12), 0.0)


def upsample(heatmaps: np.ndarray, size: int) -> np.ndarray:
    """Heatmaps resized to size x size, bilinear, as float32."""
    out = np.empty((len(heatmaps), size, size), np.float32)
    for i, cam in enumerate(heatmaps):
        out[i] = cv2.resize(np.asarray(cam, np.float32), (size, size), interpolation=cv2.INTER_LINEAR)
    return out


def overlay(gray: np.ndarray, heatmap: np.ndarray, alpha: float = 0.45) -> np.ndarray:
    """A BGR picture: the X-ray with the heatmap in a perceptual colormap on top."""
    heat = cv2.resize(heatmap, gray.shape[::-1], interpolation=cv2.INTER_LINEAR)
    colour = cv2.applyColorMap((np.clip(heat, 0, 1) * 255).astype(np.uint8), COLORMAP)
    base = cv2.cvtColor(gray, cv2.COLOR_GRAY2BGR)
    return cv2.addWeighted(colour, alpha, base, 1 - alpha, 0)


def colorbar(width: int = 256, height: int = 14) -> np.ndarray:
    """The overlay's colour scale as a BGR strip, heat 0 on the left to 1 on the right: made by the
    same cv2 colormap as the overlay, so the two cannot disagree (matplotlib's inferno is a
    separate table, and its text would be baked into pixels; the page sets the labels as text)."""
    ramp = np.uint8(np.round(np.linspace(0, 255, width)))
    return cv2.applyColorMap(np.tile(ramp, (height, 1)), COLORMAP)


def mask_boundary(mask: np.ndarray) -> np.ndarray:
    """The mask's pixels with a 4-neighbour outside it (beyond the image's edge counts as
    outside): a closed outline one pixel wide, lying on the mask itself."""
    inside = (np.asarray(mask) > 0).astype(np.uint8)
    cross = cv2.getStructuringElement(cv2.MORPH_CROSS, (3, 3))
    core = cv2.erode(inside, cross, borderType=cv2.BORDER_CONSTANT, borderValue=0)
    return (inside > 0) & (core == 0)


def draw_outline(picture: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """A copy of a BGR picture with the outline of `mask` in OUTLINE_BGR. A smaller mask is scaled
    up smoothly (bilinear, then cut at half) so that its outline does not show the mask's pixel steps."""
    inside = (np.asarray(mask) > 0).astype(np.float32)
    scaled = cv2.resize(inside, picture.shape[1::-1], interpolation=cv2.INTER_LINEAR) > 0.5
    out = picture.copy()
    out[mask_boundary(scaled)] = OUTLINE_BGR
    return out


def energy_inside(heatmaps: np.ndarray, masks: np.ndarray) -> np.ndarray:
    """Per image: the share of positive heatmap energy inside the mask (nan where all zero)."""
    inside = (heatmaps * (masks > 0)).reshape(len(heatmaps), -1).sum(1)
    total = heatmaps.reshape(len(heatmaps), -1).sum(1)
    return np.where(total > 0, inside / np.maximum(total, 1e-12), np.nan)


def tolerance(size: int) -> int:
    """The pointing game's tolerance: 15 px at 224 px (Zhang et al. 2016), scaled to the image."""
    return int(round(15 * size / 224))


def dilate(masks: np.ndarray, radius: int) -> np.ndarray:
    kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * radius + 1, 2 * radius + 1))
    return np.stack([cv2.dilate(np.asarray(m), kernel) for m in masks]) if radius else np.asarray(masks)


def pointing_hits(heatmaps: np.ndarray, masks: np.ndarray) -> np.ndarray:
    """Per image: is the heatmap's peak inside the mask? (the pointing game; dilate masks for tolerance)"""
    flat = heatmaps.reshape(len(heatmaps), -1)
    peaks = flat.argmax(axis=1)
    return (masks.reshape(len(masks), -1)[np.arange(len(masks)), peaks] > 0) & (flat.max(axis=1) > 0)


# --- scoring heatmaps against masks: the gradcam and external stages' quantitative check ---

CHUNK = 256  # heatmaps upsampled to the masks' size at a time: memory stays flat with the split's size


def per_image_scores(heatmaps: np.ndarray, masks: dict) -> dict[str, np.ndarray]:
    """Per image, for whichever masks exist: the share of heatmap energy inside the lungs and the
    lungs' share of the image (both nan where its lung mask is empty: its lungs are not known); and
    whether it has a lesion, the pointing game's hit and chance, the energy share inside the lesion
    and the lesion's area. Heatmaps of any resolution are upsampled, CHUNK at a time, to the masks'."""
    size = next(iter(masks.values())).shape[1]
    tol = tolerance(size)
    parts: dict[str, list] = {}
    for start in range(0, len(heatmaps), CHUNK):
        chunk = heatmaps[start : start + CHUNK]
        heat = chunk if chunk.shape[1] == size else upsample(chunk, size)
        stop = start + len(heat)
        found: dict[str, Any] = {}
        if "masks" in masks:
            lungs = np.asarray(masks["masks"][start:stop])
            area = (lungs > 0).reshape(len(lungs), -1).mean(1)
            known = area > 0  # an empty mask (an image of a source with some masks only): lungs not known
            found.update(
                lung_share=np.where(known, energy_inside(heat, lungs), np.nan), lung_area=np.where(known, area, np.nan)
            )
        if "lesions" in masks:
            lesion = np.asarray(masks["lesions"][start:stop])
            near = dilate(lesion, tol)
            found.update(
                has_lesion=lesion.reshape(len(lesion), -1).any(1),
                hits=pointing_hits(heat, near),
                lesion_share=energy_inside(heat, lesion),
                # Chance of each: a peak dropped uniformly at random; energy spread evenly.
                hit_chance=(near > 0).reshape(len(near), -1).mean(1),
                lesion_area=(lesion > 0).reshape(len(lesion), -1).mean(1),
            )
        for name, values in found.items():
            parts.setdefault(name, []).append(values)
    return {name: np.concatenate(values) for name, values in parts.items()}


def mask_scores(heatmaps: np.ndarray, y_true: np.ndarray, classes: list[str], masks: dict, *, seed: int) -> dict:
    """The quantitative check, per class and overall, for whichever masks the data has: the lung
    energy share with its 95% bootstrap interval over images (seeded), overall and per class; the
    lung scores are left out where no image's lungs are known (every lung mask empty)."""
    out = {}
    per = per_image_scores(heatmaps, masks)
    if "masks" in masks and not np.isnan(per["lung_area"]).all():
        out["lung_energy_share"] = _lung_scores(per, y_true, classes, seed)
    if "lesions" in masks:
        out["lesions"] = _lesion_scores(per, y_true, classes, tolerance(masks["lesions"].shape[1]))
    return out


def _r4(x: float | None) -> float | None:
    """Four decimals, for scores.json; None for an undefined value (nan)."""
    return None if x is None or np.isnan(x) else round(float(x), 4)


def _share(share: np.ndarray, area: np.ndarray, seed: int) -> dict:
    """The mean lung energy share of some images with its interval, and its chance level (the lungs'
    mean share of the image), over n: the images whose lungs are known (area not nan); None for a
    score with no image to stand on. A share is nan where the heatmap is all zero: left out."""
    known = ~np.isnan(area)
    scored = share[known]
    out: dict = {"share": None, "share_ci": None, "chance": None, "n": int(known.sum())}
    if known.any():
        out["chance"] = _r4(area[known].mean())
    if not np.isnan(scored).all():  # some image whose lungs are known and whose heatmap is not all zero
        low, high = mean_interval(scored, seed=seed)
        out.update(share=_r4(np.nanmean(scored)), share_ci={"lower": _r4(low), "upper": _r4(high)})
    return out


def _lung_scores(per: dict[str, np.ndarray], y_true: np.ndarray, classes: list[str], seed: int) -> dict:
    """The share of heatmap energy inside the lungs: overall (with its interval), its chance level
    (the lungs' share of the image), and the same for every class (n 0 and None where none of its
    test images has known lungs)."""
    overall = _share(per["lung_share"], per["lung_area"], seed)
    return {
        "overall": overall["share"],
        "overall_ci": overall["share_ci"],
        "chance": overall["chance"],
        "n": overall["n"],
        "per_class": {
            c: _share(per["lung_share"][y_true == i], per["lung_area"][y_true == i], seed)
            for i, c in enumerate(classes)
        },
    }


def _lesion_scores(per: dict[str, np.ndarray], y_true: np.ndarray, classes: list[str], tolerance_px: int) -> dict:
    """The pointing game and the energy inside the lesion, each beside its chance level, over the
    images with a lesion: overall (None where none has one) and per class."""
    has = per["has_lesion"]

    def summary(sel: np.ndarray) -> dict:
        return {
            "n": int(sel.sum()),
            "pointing_game": _r4(per["hits"][sel].mean()),
            "pointing_chance": _r4(per["hit_chance"][sel].mean()),
            "energy_in_lesion": _r4(np.nanmean(per["lesion_share"][sel])),
            "energy_chance": _r4(per["lesion_area"][sel].mean()),
        }

    per_class = {c: summary((y_true == i) & has) for i, c in enumerate(classes) if ((y_true == i) & has).any()}
    return {
        "pointing_tolerance_px": tolerance_px,
        "overall": summary(has) if has.any() else None,
        "per_class": per_class,
    }


def headline_scores(scores: dict) -> dict:
    """The numbers of metrics/gradcam.json: overall figures beside their chance levels."""
    out = {}
    if "lung_energy_share" in scores:
        out["lung_energy_share"] = scores["lung_energy_share"]["overall"]
        out["lung_energy_share_ci"] = scores["lung_energy_share"]["overall_ci"]
        out["lung_energy_chance"] = scores["lung_energy_share"]["chance"]
    overall = scores.get("lesions", {}).get("overall")
    if overall:
        out["pointing_game"] = overall["pointing_game"]
        out["pointing_chance"] = overall["pointing_chance"]
    return headline(out, list(out))
