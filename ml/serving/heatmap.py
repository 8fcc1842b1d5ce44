"""Class-activation heatmaps: which part of the image drove the pneumonia score.

The map is computed in the same compiled call as the scores (the gradient of
the pneumonia logit with respect to a 14x14 feature map only runs back
through the top of the network), so every scored study gets one for about
the cost of the forward pass. Two methods, named by the model card:

- ``gradcam`` (Selvaraju et al. 2017): channels weighted by their *average*
  gradient. v1 uses it.
- ``hirescam`` (Draelos & Carin 2020): gradient times activation at every
  position, summed over channels. Averaging the gradient first can cancel
  positive and negative evidence: v3's Grad-CAM at conv_pw_11 was empty for a
  fixture pneumonia scored 1.000, and put 16 % of another's mass in the
  lungs; its HiResCAM maps put 70-92 % of their mass inside the hand-drawn
  lung boxes. At the last layer, before global pooling, the two coincide.

The raw map lives on the model's 224x224 squashed grid; ``overlay_png``
stretches it back to the original aspect ratio, the same way the squash
went, so it lines up with the displayed image.
"""

from __future__ import annotations

import io
from dataclasses import dataclass

import numpy as np
from PIL import Image

from ml.serving.calibration import sigmoid
from ml.serving.inference import Prediction, Screener

OVERLAY_LONG_SIDE = 256  # the map comes from a 7x7 grid: more pixels add nothing but encoding time
SALIENT_FRACTION = 0.5  # the salient box covers the map at or above half its peak


@dataclass(frozen=True)
class Explained:
    prediction: Prediction
    heatmap: (
        np.ndarray
    )  # (h, w) float32 in [0, 1] at the feature map's resolution; all zeros when nothing drove the score
    # Share of the raw map's mass outside the lung fields the card's lung-field head found, or None
    # for a card without one. The shown map is weighted by the lung fields; this keeps what it hides.
    outside_lungs: float | None = None


# The deepest layer at 14x14 rather than the last one at 7x7: a 7x7 map puts
# one value on a 32-pixel square, too coarse to tell a lung from the
# mediastinum. (Measured on the hand-annotated fixtures: the 7x7 map of one of
# the four pneumonia fixtures had less than half its mass inside the lungs.)
GRADCAM_LAYERS = {"mobilenet_025": "conv_pw_11_relu"}
# The last convolutional feature map of each architecture, before global pooling:
# the fallback for cards that name no Grad-CAM layer (and what training records).
FEATURE_LAYERS = {"mobilenet_025": "conv_pw_13_relu", "xception": "block14_sepconv2_act", "small_cnn": "last_conv"}
METHODS = ("gradcam", "hirescam")


def _feature_layer_name(screener: Screener) -> str:
    name = (
        screener.card.get("gradcam_layer")
        or GRADCAM_LAYERS.get(str(screener.card.get("architecture")))
        or screener.card.get("feature_layer")
    )
    if name:
        return str(name)
    for candidate in FEATURE_LAYERS.values():
        try:
            screener.model.get_layer(candidate)
            return candidate
        except ValueError:
            continue
    raise ValueError("the model card names no Grad-CAM layer and none of the known feature layers exists")


class LungField:
    """A card's lung-field head: P(lung) per cell of the heatmap layer, from that layer's features and position.

    A linear (1x1) logistic head on the same 14x14 activations the heatmap is
    computed from, plus a quadratic in the cell's position, fitted on
    hand-drawn lung boxes (``ml.evaluation.lung_field_fit``). It costs one dot
    product per cell, and it lets the map shown to a reader say what in the
    *lungs* drove the score, while the share of evidence it leaves out is
    reported, not dropped: a score explained by the shoulder or the film
    border should be seen as such.
    """

    def __init__(self, spec: dict, grid: tuple[int, int]):
        self.layer = str(spec["layer"])
        self.weights = np.asarray(spec["weights"], dtype=np.float32)
        position = position_basis(*grid) @ np.asarray(spec["position_weights"])
        self.position_logit = (float(spec["bias"]) + position).astype(np.float32)


def position_basis(rows: int, cols: int) -> np.ndarray:
    """The position terms of the lung-field head for each cell of a ``rows`` x ``cols`` map, (rows, cols, 6)."""
    v, u = np.meshgrid((np.arange(rows) + 0.5) / rows, (np.arange(cols) + 0.5) / cols, indexing="ij")
    du, dv = u - 0.5, v - 0.5
    return np.stack([du, dv, du * du, dv * dv, du * dv, np.abs(du)], axis=-1)


def lung_weighted(cam: np.ndarray, lung: np.ndarray) -> tuple[np.ndarray, float]:
    """(the map weighted by P(lung)² and scaled to peak 1, share of the raw map's mass outside the lungs).

    Squared, so that the cells on the field's edge (P near 0.5, a 16-pixel
    cell half on a rib) count a quarter, not half. Out of fold on the 60
    annotated images this kept 0.88 of the map's mass inside the drawn lungs
    against 0.82 for P itself (``ml/README.md``, "Heatmaps on the lungs").
    """
    total = float(cam.sum())
    if total <= 0:
        return cam, 0.0
    outside = float((cam * (1 - lung)).sum()) / total
    weighted = cam * lung * lung
    peak = float(weighted.max())
    return (weighted / peak if peak > 0 else weighted).astype(np.float32), outside


def heatmap_method(screener: Screener) -> str:
    """The card's ``heatmap_method``; cards from before the choice existed (v1) mean Grad-CAM."""
    method = str(screener.card.get("heatmap_method", "gradcam"))
    if method not in METHODS:
        raise ValueError(f"the model card names an unknown heatmap method {method!r}; known: {', '.join(METHODS)}")
    return method


class ExplainingScreener:
    """A ``Screener`` whose forward pass also returns a class-activation map per image."""

    def __init__(self, screener: Screener):
        import keras
        import tensorflow as tf

        self.screener = screener
        self.version = screener.version
        self.threshold = screener.threshold
        self.input_size = screener.input_size
        self.card = screener.card
        model = screener.model
        layer = model.get_layer(_feature_layer_name(screener))
        self.layer_name = layer.name
        self.method = heatmap_method(screener)
        self._grad_model = keras.Model(model.input, [layer.output, model.output])
        size = self.input_size
        hirescam = self.method == "hirescam"
        spec = self.card.get("lung_field")
        self.lung_field = LungField(spec, tuple(layer.output.shape[1:3])) if spec else None
        if self.lung_field is not None and self.lung_field.layer != layer.name:
            raise ValueError(f"the card's lung field reads {self.lung_field.layer}, the heatmap {layer.name}")
        lung_field = self.lung_field

        @tf.function(input_signature=[tf.TensorSpec([None, size, size], tf.uint8)], reduce_retracing=True)
        def forward(images):
            with tf.GradientTape() as tape:
                features, outputs = self._grad_model(images, training=False)
                tape.watch(features)
                logits = outputs["pneumonia"] if isinstance(outputs, dict) else outputs[0]
            gradients = tape.gradient(logits, features)
            weights = gradients if hirescam else tf.reduce_mean(gradients, axis=(1, 2), keepdims=True)
            cams = tf.nn.relu(tf.reduce_sum(weights * features, axis=-1))
            peak = tf.reduce_max(cams, axis=(1, 2), keepdims=True)
            cams = tf.math.divide_no_nan(cams, peak)
            viral = outputs["viral"] if isinstance(outputs, dict) and "viral" in outputs else tf.zeros_like(logits)
            if lung_field is None:  # decided when the graph is traced: cards without a head pay nothing
                return logits, viral, cams, cams
            lung_logits = tf.tensordot(features, tf.constant(lung_field.weights, features.dtype), 1)
            return logits, viral, cams, tf.sigmoid(lung_logits + tf.constant(lung_field.position_logit, features.dtype))

        self._forward = forward
        self._has_viral = screener.has_viral_output

    def explain(self, images: np.ndarray, chunk: int = 64) -> list[Explained]:
        self.screener._check(images)
        explained: list[Explained] = []
        for start in range(0, len(images), chunk):
            logits, viral, cams, lungs = (np.asarray(t) for t in self._forward(images[start : start + chunk]))
            probability = self.screener.calibrate(logits.astype(np.float64).reshape(-1))
            viral_probability = sigmoid(viral.astype(np.float64).reshape(-1)) if self._has_viral else None
            for i, p in enumerate(probability):
                prediction = Prediction(
                    probability=float(p),
                    label="PNEUMONIA" if p >= self.threshold else "NORMAL",
                    viral_probability=None if viral_probability is None else float(viral_probability[i]),
                )
                if self.lung_field is None:
                    explained.append(Explained(prediction, cams[i].astype(np.float32)))
                else:
                    explained.append(Explained(prediction, *lung_weighted(cams[i], lungs[i])))
        return explained


def upsample(heatmap: np.ndarray, width: int, height: int) -> np.ndarray:
    """The map resized to ``width`` x ``height`` (bilinear), values kept in [0, 1]."""
    image = Image.fromarray(np.clip(heatmap, 0, 1).astype(np.float32), mode="F")
    return np.clip(np.asarray(image.resize((width, height), Image.Resampling.BILINEAR)), 0, 1)


def salient_box(heatmap: np.ndarray, fraction: float = SALIENT_FRACTION) -> tuple[float, float, float, float] | None:
    """``(x0, y0, x1, y1)`` in [0, 1] image fractions around the map's hottest region, or None for an empty map.

    Fractions, not pixels: the same box fits the squashed model input, the
    original and any display size, because they differ only by stretching.
    """
    fine = upsample(heatmap, 224, 224)
    peak = float(fine.max())
    if peak <= 0:
        return None
    # Which hot region holds the peak is decided on a 56x56 copy (a flood fill at 224 px cost 5 ms a
    # study); its cells, grown by one, then select the 224 px pixels the box is measured on.
    coarse = upsample(heatmap, 56, 56)
    row, column = np.unravel_index(int(coarse.argmax()), coarse.shape)
    seed = (int(row), int(column))
    focus = _grow(_connected(coarse >= fraction * float(coarse.max()), seed))
    ys, xs = np.nonzero((fine >= fraction * peak) & np.kron(focus, np.ones((4, 4), dtype=bool)))
    return (xs.min() / 224, ys.min() / 224, (xs.max() + 1) / 224, (ys.max() + 1) / 224)


def _grow(region: np.ndarray) -> np.ndarray:
    grown = region.copy()
    grown[1:] |= region[:-1]
    grown[:-1] |= region[1:]
    grown[:, 1:] |= region[:, :-1]
    grown[:, :-1] |= region[:, 1:]
    return grown


def _connected(mask: np.ndarray, seed: tuple[int, int]) -> np.ndarray:
    """The 4-connected part of ``mask`` that holds ``seed``.

    The box frames the hottest focus, not every hot spot: two foci in both
    lungs would otherwise give one box over the mediastinum between them.
    Grown by repeated dilation inside the mask (no scipy in the worker).
    """
    region = np.zeros_like(mask)
    region[seed] = True
    while True:
        grown = _grow(region) & mask
        if (grown == region).all():
            return region
        region = grown


def _colour(values: np.ndarray) -> np.ndarray:
    """A blue-to-red ramp (no matplotlib in the worker): RGB uint8 for values in [0, 1]."""
    red = np.clip(1.5 - np.abs(4 * values - 3), 0, 1)
    green = np.clip(1.5 - np.abs(4 * values - 2), 0, 1)
    blue = np.clip(1.5 - np.abs(4 * values - 1), 0, 1)
    return (np.stack([red, green, blue], axis=-1) * 255).astype(np.uint8)


def overlay_png(
    heatmap: np.ndarray, original_width: int, original_height: int, box: tuple[float, float, float, float] | None = None
) -> bytes:
    """An RGBA PNG with the original's aspect ratio: colour shows where, alpha how much; ``box`` outlined."""
    scale = OVERLAY_LONG_SIDE / max(original_width, original_height)
    width = max(1, round(original_width * scale))
    height = max(1, round(original_height * scale))
    values = upsample(heatmap, width, height)
    rgba = np.dstack([_colour(values), (np.clip(values, 0, 1) * 200).astype(np.uint8)])
    image = Image.fromarray(rgba, mode="RGBA")
    if box is not None:
        from PIL import ImageDraw

        x0, y0, x1, y1 = box
        line = max(2, round(max(width, height) / 200))
        ImageDraw.Draw(image).rectangle(
            [x0 * width, y0 * height, x1 * width - 1, y1 * height - 1], outline=(255, 255, 0, 255), width=line
        )
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", compress_level=1)
    return buffer.getvalue()


def boxes_mask(boxes, size: int = 224) -> np.ndarray:
    """A ``size`` x ``size`` boolean mask of the union of boxes given as image fractions."""
    mask = np.zeros((size, size), dtype=bool)
    for x0, y0, x1, y1 in boxes:
        mask[round(y0 * size) : round(y1 * size), round(x0 * size) : round(x1 * size)] = True
    return mask


def mass_inside(heatmap: np.ndarray, box) -> float:
    """Share of the map's total mass inside ``box``, or inside the union of a list of boxes (image fractions)."""
    fine = upsample(heatmap, 224, 224)
    total = float(fine.sum())
    if total <= 0:
        return 0.0
    boxes = [box] if np.ndim(box) == 1 else list(box)
    return float(fine[boxes_mask(boxes)].sum()) / total
