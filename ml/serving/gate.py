"""Out-of-distribution gate: is this a frontal chest radiograph at all?

The pneumonia model returns a confident-looking probability for anything it is
shown, a holiday photo included. The gate runs before it, on the very same
224x224 grey squash (``ml.serving.preprocess.squash_to_input``), and turns inputs the
model was never meant to score into a REJECTED study with a reason a hospital
user can act on.

Three layers, cheapest first, each catching what the next one is worst at:

1. Pixel statistics (numpy only): blank or nearly uniform images, and pixel
   noise. They give a precise reason and do not depend on what a network has
   learned to call normal.
2. Optional colour cue from the lead's decoder (:func:`colourfulness`):
   radiographs are grey, so a clearly colourful original is a photo,
   screenshot or colour rendering, whatever its luma looks like.
3. Embeddings of a tiny ImageNet MobileNet (alpha 0.25, 218k parameters; the
   ImageNet weights are shipped inside the gate folder so nothing is
   downloaded at run time), scored twice:

   * a Gaussian density fitted on training-split chest X-rays only (Mahalanobis
     distance in a PCA subspace plus the residual off it). It has never seen a
     negative, so it is what rejects kinds of image nobody thought of;
   * a small multinomial logistic head trained on chest X-rays against
     synthetic negatives (documents, shapes, noise, gradients) and against
     chest X-rays rotated, upside down or intensity-inverted. Those are close
     to the training data in embedding space, so the density alone lets some
     through; the head also names what the image looks like for the reason.

An image is accepted only when all layers accept it. ``GateVerdict.score`` is
the smaller of the two learned margins (density, head), each scaled so that 0
is its threshold: positive means chest-X-ray-like, and it is logged so the
thresholds can be re-tuned from production traffic.

Fitting lives in ``ml/gate_fit.py``; see ``ml/GATE.md`` for the data, the
thresholds and the measured rates. This module must stay importable without
Django, and imports TensorFlow/Keras only when a gate is loaded.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ml.serving.folding import fold_batch_norms

INPUT_SIZE = 224  # = ml.serving.preprocess.INPUT_SIZE; the gate sees exactly the model's input
GATE_VERSION = "gate-v1"
DEFAULT_GATE_DIR = Path(__file__).resolve().parents[1] / "models" / GATE_VERSION
BACKBONE_FILE = "backbone.weights.h5"
PARAMS_FILE = "params.h5"
CARD_FILE = "card.json"
FEATURE_RESOLUTION = 112  # pixels the backbone sees; see build_feature_model

CHEST = "chest_xray"

# What the head (or a pixel rule) says an image looks like, as the end of the
# sentence "This does not look like a frontal chest X-ray (it looks like ...)."
LOOKS_LIKE = {
    "blank": "a blank or nearly uniform image",
    "noise": "random noise rather than an image",
    "colour": "a colour photograph or screenshot",
    "rotated": "a chest X-ray turned on its side; please send it upright",
    "upside_down": "a chest X-ray upside down; please send it upright",
    "inverted": "a chest X-ray with inverted grey levels (bones dark); please send it as displayed for reading",
    "document": "a document, chart or screenshot",
    "synthetic": "a photograph, drawing or pattern rather than a radiograph",
}
# Chest X-rays the sender can fix by exporting them as displayed for reading.
XRAY_FIXABLE = frozenset({"rotated", "upside_down", "inverted"})


@dataclass(frozen=True)
class GateVerdict:
    """The gate's answer for one image.

    ``reason`` is written for a hospital user and is ``None`` exactly when
    ``accepted``; ``score`` is for logs and threshold tuning (> 0 means the
    learned parts found the image chest-X-ray-like).
    """

    accepted: bool
    reason: str | None
    score: float


def colourfulness(image) -> float:
    """Hasler & Suesstrunk's colourfulness of an RGB(A) image; 0.0 for grey.

    Call it on the decoded image *before* it is converted to grey (a PIL image
    or an (H, W, 3|4) array), and pass the values to :meth:`ChestXrayGate.check`.
    Radiographs exported as RGB have three equal channels and score 0; a
    coloured ruler or annotation on an X-ray covers too little of the image to
    matter, while photos and screenshots typically score 15 or more. Grey input
    (2-D arrays, PIL modes L/I;16/...) returns 0.0. Large images are subsampled
    to about 256 px on the long side: the statistic is global, and this keeps
    it well under a millisecond for a 4k photo.
    """
    array = _rgb_array(image)
    if array is None:
        return 0.0
    step = max(1, int(np.ceil(max(array.shape[:2]) / 256)))
    rgb = array[::step, ::step, :3].astype(np.float32)
    red, green, blue = rgb[..., 0], rgb[..., 1], rgb[..., 2]
    rg = red - green
    yb = 0.5 * (red + green) - blue
    return float(np.hypot(rg.std(), yb.std()) + 0.3 * np.hypot(rg.mean(), yb.mean()))


# Pillow modes that hold no colour: a file stored in one of them has colourfulness 0 without decoding.
GREY_MODES = frozenset({"1", "L", "LA", "I", "I;16", "I;16B", "I;16L", "F"})


def colourfulness_of_file(source: bytes | str | os.PathLike) -> float:
    """:func:`colourfulness` of a JPEG or PNG file; NaN (unknown) for anything else.

    For the worker, which decodes JPEGs in draft mode straight to luma and so
    never holds their colour: colour JPEGs are decoded again here at 1/8 scale
    (DCT scaling in libjpeg, a few milliseconds even for a 12-megapixel photo).
    Call it only on files ``ml.serving.decode`` has accepted: that is where size and
    pixel-count limits are enforced. Grey files return 0.0 without decoding.
    """
    import io

    from PIL import Image

    data = source if isinstance(source, bytes) else Path(source).read_bytes()
    try:
        with Image.open(io.BytesIO(data), formats=["JPEG", "PNG"]) as image:
            if image.mode in GREY_MODES:
                return 0.0
            if image.format == "JPEG":
                image.draft("RGB", (64, 64))
            image.load()
            return colourfulness(image)
    except Exception:  # noqa: BLE001 - Pillow raises a zoo of types; decode reports errors, an unknown cue passes
        return float("nan")


def _rgb_array(image) -> np.ndarray | None:
    from PIL import Image  # a runtime dependency of decoding

    if isinstance(image, Image.Image):
        if image.mode in ("RGB", "RGBA", "RGBX"):
            return np.asarray(image)
        if image.mode in ("P", "PA", "CMYK", "YCbCr", "LAB", "HSV"):
            return np.asarray(image.convert("RGB"))
        return None
    array = np.asarray(image)
    if array.ndim == 3 and array.shape[2] in (3, 4):
        return array
    if array.ndim == 2 or (array.ndim == 3 and array.shape[2] in (1, 2)):
        return None
    raise ValueError(f"expected an (H, W), (H, W, 3) or (H, W, 4) image, got shape {array.shape}")


def pixel_statistics(images: np.ndarray) -> dict[str, np.ndarray]:
    """Cheap per-image statistics of (N, 224, 224) uint8 inputs, vectorised over N.

    ``spread`` is the 5th-95th percentile range in grey levels (a blank or
    nearly uniform image has almost none); ``roughness`` is the mean absolute
    difference between neighbouring pixels relative to that spread: radiographs
    are smooth at 224 px (at most about 0.05 in training), independent pixel
    noise is about 0.3 or more. Percentiles come from per-image histograms
    (uint8 has 256 levels), several times cheaper than sorting.
    """
    n = len(images)
    if n == 0:
        return {"spread": np.zeros(0), "roughness": np.zeros(0)}
    offsets = (np.arange(n, dtype=np.int64) * 256)[:, None]
    counts = np.bincount((images.reshape(n, -1) + offsets).ravel(), minlength=256 * n).reshape(n, 256)
    cumulative = np.cumsum(counts, axis=1) / images[0].size
    low = (cumulative < 0.05).sum(axis=1)
    high = (cumulative < 0.95).sum(axis=1)
    spread = (high - low).astype(np.float64)
    x = images.astype(np.int16)
    dx = np.abs(np.diff(x, axis=2)).mean(axis=(1, 2))
    dy = np.abs(np.diff(x, axis=1)).mean(axis=(1, 2))
    roughness = 0.5 * (dx + dy) / np.maximum(spread, 1.0)
    return {"spread": spread, "roughness": roughness}


def build_feature_model(backbone_weights: str | os.PathLike | None = None, resolution: int = FEATURE_RESOLUTION):
    """MobileNet(alpha=0.25) embeddings of (N, 224, 224, 1) float grey in [0, 255].

    The 224 px input is average-pooled to ``resolution`` first: telling a
    chest film from a photo or a document is a coarse decision, and at 112 px
    the backbone costs a quarter of what it costs at 224. Output: (N, 1280) =
    global average of the last feature map (256) plus its 2x2 overlapping
    average pools (4 x 256). The pooled grid keeps coarse layout (where the
    bright mediastinum and dark lungs are), which is what separates an upright
    chest from one on its side; the global part is layout-free texture.
    Scaling to [-1, 1] and the grey-to-RGB repeat follow the ImageNet training
    of these weights.
    """
    import keras

    if INPUT_SIZE % resolution:
        raise ValueError(f"resolution must divide {INPUT_SIZE}, got {resolution}")
    grey = keras.Input((INPUT_SIZE, INPUT_SIZE, 1), name="grey")
    x = grey
    if resolution != INPUT_SIZE:
        x = keras.layers.AveragePooling2D(pool_size=INPUT_SIZE // resolution, name="downsample")(x)
    scaled = keras.layers.Rescaling(1 / 127.5, offset=-1.0, name="to_unit_range")(x)
    rgb = keras.layers.Concatenate(name="grey_to_rgb")([scaled, scaled, scaled])
    backbone = keras.applications.MobileNet(
        alpha=0.25, include_top=False, weights=None, input_shape=(resolution, resolution, 3)
    )
    if backbone_weights is not None:
        backbone.load_weights(str(backbone_weights))
    feature_map = backbone(rgb)
    size = int(feature_map.shape[1])  # 7 at 224 px, 4 at 112 px
    global_part = keras.layers.GlobalAveragePooling2D(name="global_pool")(feature_map)
    grid = keras.layers.AveragePooling2D(pool_size=size - size // 2, strides=size // 2, name="grid_pool")(feature_map)
    grid_part = keras.layers.Flatten(name="grid_flat")(grid)
    features = keras.layers.Concatenate(name="features")([global_part, grid_part])
    return keras.Model(grey, features, name="gate_features")


def check_inputs(images: np.ndarray) -> np.ndarray:
    """Validate the (N, 224, 224) uint8 batch contract; a clear ValueError otherwise."""
    if not isinstance(images, np.ndarray):
        # ValueError, not TypeError: the worker's contract is "bad input raises ValueError".
        raise ValueError(f"images must be a numpy array, got {type(images).__name__}")  # noqa: TRY004
    if images.dtype != np.uint8:
        raise ValueError(
            f"images must be uint8 grey from ml.serving.preprocess.squash_to_input, got dtype {images.dtype}"
        )
    if images.ndim != 3 or images.shape[1:] != (INPUT_SIZE, INPUT_SIZE):
        raise ValueError(
            f"images must have shape (N, {INPUT_SIZE}, {INPUT_SIZE}) (a batch of squashed grey inputs), "
            f"got {images.shape}"
        )
    return images


def reason_for(kind: str) -> str:
    """The sentence shown to hospital staff for a rejection of this kind."""
    if kind not in LOOKS_LIKE:
        return "This does not look like a frontal chest X-ray of the kind this service was validated on."
    return f"This does not look like a frontal chest X-ray (it looks like {LOOKS_LIKE[kind]})."


class ChestXrayGate:
    """A fitted gate: backbone weights, density and head parameters, thresholds.

    Load once per worker process (like the pneumonia model) and call
    :meth:`check` on each chunk; it is stateless between calls.
    """

    def __init__(self, feature_model, params: dict[str, np.ndarray], card: dict):
        self._feature_model = feature_model
        self._params = params
        self.card = card
        self.version = card["version"]
        self._classes = list(card["head"]["classes"])
        self._chest_index = self._classes.index(CHEST)
        self._forward: Callable | None = None

    @classmethod
    def load(cls, gate_dir: str | os.PathLike | None = None, *, fold: bool = True) -> ChestXrayGate:
        """Load a gate folder (default: the shipped ``ml/models/gate-v1``).

        ``fold=False`` keeps the backbone's batch normalizations as trained
        (for exporting the network layer by layer); serving folds them.
        """
        folder = Path(gate_dir) if gate_dir is not None else DEFAULT_GATE_DIR
        card_path = folder / CARD_FILE
        if not card_path.is_file():
            raise FileNotFoundError(f"no gate card at {card_path}")
        card = json.loads(card_path.read_text())
        params = load_params(folder / PARAMS_FILE)
        feature_model = build_feature_model(resolution=int(card.get("resolution", INPUT_SIZE)))
        feature_model.load_weights(str(folder / BACKBONE_FILE))
        if fold:
            probe = np.random.default_rng(0).uniform(0, 255, (4, INPUT_SIZE, INPUT_SIZE, 1)).astype(np.float32)
            feature_model = fold_batch_norms(feature_model, probe)
        return cls(feature_model, params, card)

    def learned_scores(self, images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Density distance (N,) and head probabilities (N, classes), in one compiled pass."""
        distance, probabilities, _ = self._learned(images)
        return distance, probabilities

    def features(self, images: np.ndarray) -> np.ndarray:
        """The backbone's (N, 1280) output, the input of ``ml.serving.population_check`` (fitting uses this)."""
        return self._learned(images)[2]

    def _learned(self, images: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Density distance, head probabilities and raw backbone features, in one compiled pass.

        The density and head arithmetic runs inside the same TensorFlow graph
        as the backbone: done in numpy, a handful of tiny matrix products cost
        more than the network on a busy 2-core worker (BLAS threads spin while
        fighting the worker's other processes for the cores). The features are
        returned too, so the population check (``ml.serving.population_check``) costs no
        second pass through the backbone.
        """
        images = check_inputs(images)
        width = int(self._feature_model.output.shape[-1])
        if len(images) == 0:
            return np.zeros(0), np.zeros((0, len(self._classes))), np.zeros((0, width), np.float32)
        if self._forward is None:
            self._forward = _compile_forward(self._feature_model, self._params)
        forward = self._forward
        import tensorflow as tf

        distance, probabilities, features = forward(tf.convert_to_tensor(images[..., None].astype(np.float32)))
        return distance.numpy().astype(np.float64), probabilities.numpy().astype(np.float64), features.numpy()

    def scores(self, images: np.ndarray, *, colourfulness: np.ndarray | None = None) -> dict[str, np.ndarray]:
        """Every quantity the decision uses, per image (for evaluation and tuning)."""
        images = check_inputs(images)
        colour = _colour_values(colourfulness, len(images))
        stats = pixel_statistics(images)
        distance, probabilities, features = self._learned(images)
        thresholds = self.card["thresholds"]
        density_margin = np.log(thresholds["density_distance"]) - np.log(np.maximum(distance, 1e-12))
        chest_p = np.clip(probabilities[:, self._chest_index], 1e-7, 1 - 1e-7)
        head_margin = _logit(chest_p) - _logit(thresholds["head_chest_probability"])
        return {
            "spread": stats["spread"],
            "roughness": stats["roughness"],
            "colourfulness": colour,
            "density_distance": distance,
            "density_margin": density_margin,
            "head_probabilities": probabilities,
            "head_margin": head_margin,
            "score": np.minimum(density_margin, head_margin),
            "features": features,
        }

    def check(self, images: np.ndarray, *, colourfulness: np.ndarray | None = None) -> list[GateVerdict]:
        """One verdict per image of an (N, 224, 224) uint8 batch, in order.

        ``colourfulness``: optional (N,) values of :func:`colourfulness` computed
        on each original before grey conversion; NaN or absent means unknown.
        """
        return self.verdicts(self.scores(images, colourfulness=colourfulness))

    def verdicts(self, s: dict[str, np.ndarray]) -> list[GateVerdict]:
        """The verdicts for :meth:`scores` output; lets a caller keep ``s["features"]`` from the same pass."""
        thresholds = self.card["thresholds"]
        verdicts = []
        for i in range(len(s["score"])):
            kind = self._rejection_kind(s, i, thresholds)
            score = float(s["score"][i])
            verdicts.append(
                GateVerdict(accepted=kind is None, reason=None if kind is None else reason_for(kind), score=score)
            )
        return verdicts

    def _rejection_kind(self, s: dict[str, np.ndarray], i: int, thresholds: dict) -> str | None:
        if s["spread"][i] < thresholds["min_spread"]:
            return "blank"
        if s["roughness"][i] > thresholds["max_roughness"]:
            return "noise"
        if s["colourfulness"][i] > thresholds["max_colourfulness"]:  # NaN compares False: unknown passes
            return "colour"
        if s["density_margin"][i] >= 0 and s["head_margin"][i] >= 0:
            return None
        probabilities = s["head_probabilities"][i].copy()
        probabilities[self._chest_index] = -1.0
        best = self._classes[int(np.argmax(probabilities))]
        # Name the look only when the head is sure. "Please send it upright"
        # must not be said about a CT slice the head half-confuses with a
        # rotated film (it does, at 0.4-0.9), hence the high bar for those.
        needed = 0.98 if best in XRAY_FIXABLE else 0.5
        return best if probabilities.max() >= needed else "other"


def _compile_forward(feature_model, params: dict[str, np.ndarray]):
    """The backbone plus :func:`density_distance` and :func:`head_probabilities`, as one tf.function.

    Same arithmetic as the numpy reference functions below (which fitting
    uses); a test checks that the two agree. Also returns the backbone's raw
    output, for ``ml.serving.population_check``.
    """
    import tensorflow as tf

    def constant(name):
        return tf.constant(np.asarray(params[name], dtype=np.float32))

    mean, components, variances = constant("feature_mean"), constant("pca_components"), constant("pca_variances")
    residual_variance, dims = constant("residual_variance"), float(params["feature_mean"].shape[0])
    head_mean, head_scale = constant("head_mean"), constant("head_scale")
    head_weights, head_bias = constant("head_weights"), constant("head_bias")

    # reduce_retracing: chunks come in varying sizes; one graph serves them all.
    @tf.function(reduce_retracing=True)
    def forward(batch):
        features = feature_model(batch, training=False)
        z = tf.sqrt(tf.maximum(features, 0.0))
        centred = z - mean
        inside = tf.matmul(centred, components, transpose_b=True)
        mahalanobis = tf.reduce_sum(tf.square(inside) / variances, axis=1)
        residual = tf.reduce_sum(tf.square(centred), axis=1) - tf.reduce_sum(tf.square(inside), axis=1)
        residual = tf.maximum(residual, 0.0) / residual_variance
        distance = tf.sqrt((mahalanobis + residual) / dims)
        logits = tf.matmul((z - head_mean) / head_scale, head_weights, transpose_b=True) + head_bias
        return distance, tf.nn.softmax(logits, axis=1), features

    return forward


def _colour_values(colour: np.ndarray | None, n: int) -> np.ndarray:
    if colour is None:
        return np.full(n, np.nan)
    colour = np.asarray(colour, dtype=np.float64).reshape(-1)
    if colour.shape != (n,):
        raise ValueError(f"colourfulness must hold one value per image ({n}), got {colour.shape[0]}")
    return colour


def _logit(p):
    p = np.asarray(p, dtype=np.float64)
    return np.log(p) - np.log1p(-p)


def density_distance(features: np.ndarray, params: dict[str, np.ndarray]) -> np.ndarray:
    """Root of the mean squared standardised distance from the chest X-ray Gaussian.

    Mahalanobis distance inside the top-k PCA subspace plus the residual off it
    (scaled by the mean residual variance, as in probabilistic PCA), divided by
    the number of dimensions so that typical training images sit near 1.
    """
    z = _transform(features, params) - params["feature_mean"]
    inside = z @ params["pca_components"].T
    mahalanobis = np.sum(inside**2 / params["pca_variances"], axis=1)
    residual = np.sum(z**2, axis=1) - np.sum(inside**2, axis=1)
    residual = np.maximum(residual, 0.0) / float(params["residual_variance"])
    dims = z.shape[1]
    return np.sqrt((mahalanobis + residual) / dims)


def head_probabilities(features: np.ndarray, params: dict[str, np.ndarray]) -> np.ndarray:
    z = (_transform(features, params) - params["head_mean"]) / params["head_scale"]
    logits = z @ params["head_weights"].T + params["head_bias"]
    logits -= logits.max(axis=1, keepdims=True)
    e = np.exp(logits)
    return e / e.sum(axis=1, keepdims=True)


def _transform(features: np.ndarray, params: dict[str, np.ndarray]) -> np.ndarray:
    """Square root of the (non-negative, ReLU6) activations: closer to Gaussian than raw ones."""
    return np.sqrt(np.maximum(features.astype(np.float64), 0.0))


def load_params(path: str | os.PathLike) -> dict[str, np.ndarray]:
    import h5py

    with h5py.File(path, "r") as handle:
        return {name: np.asarray(handle[name]) for name in handle}


def save_params(path: str | os.PathLike, params: dict[str, np.ndarray]) -> None:
    import h5py

    with h5py.File(path, "w") as handle:
        for name, value in params.items():
            handle.create_dataset(name, data=np.asarray(value, dtype=np.float32))
