"""The screening network: uint8 grey pixels in, two logits out.

The saved model takes exactly what ``squash_to_input`` returns, a batch of
``(224, 224)`` uint8 images, and does the rest itself (scale to [-1, 1],
repeat grey into three channels), so serving cannot drift from training by
forgetting a normalisation step. It returns logits, not probabilities:
calibration is applied by ``ml.serving.inference`` with the temperature from
the model card, and logits keep that step exact.

Outputs
    ``pneumonia``: logit of P(pneumonia).
    ``viral``: logit of P(viral | pneumonia); trained on pneumonia images only,
    meaningless for normal ones.
"""

from __future__ import annotations

import os
from pathlib import Path

import keras
from keras import layers

from ml.serving.preprocess import INPUT_SIZE

WEIGHTS_DIR = Path(os.environ.get("ML_WEIGHTS_DIR", Path(__file__).resolve().parents[3] / "shared" / "weights"))
MOBILENET_WEIGHTS = "mobilenet_2_5_224_tf_no_top.h5"
XCEPTION_WEIGHTS = "xception_imagenet_notop_extracted.h5"

OUTPUT_NAMES = ("pneumonia", "viral")


def grey_to_backbone_input(image, size: int = INPUT_SIZE):
    """uint8 (N, size, size) -> float (N, size, size, 3) in [-1, 1], as the ImageNet backbones expect."""
    x = layers.Reshape((size, size, 1), name="add_channel")(image)
    x = layers.Rescaling(scale=1.0 / 127.5, offset=-1.0, name="scale_to_pm1")(x)
    return layers.Concatenate(axis=-1, name="grey_to_rgb")([x, x, x])


def _heads(features, dropout: float) -> dict:
    pooled = layers.GlobalAveragePooling2D(name="pool")(features)
    pooled = layers.Dropout(dropout, name="head_dropout")(pooled)
    pneumonia = layers.Dense(1, name="pneumonia_logit")(pooled)
    viral = layers.Dense(1, name="viral_logit")(pooled)
    return {
        "pneumonia": layers.Reshape((), name="pneumonia")(pneumonia),
        "viral": layers.Reshape((), name="viral")(viral),
    }


def build_mobilenet(
    size: int = INPUT_SIZE, weights: str | os.PathLike | None = "imagenet", dropout: float = 0.2
) -> keras.Model:
    """MobileNet v1 alpha=0.25 (218k parameters, ~4 ms/image on 2 CPU cores at batch 32).

    ``weights="imagenet"`` loads the offline file from ``WEIGHTS_DIR``; the
    backbone is built on our own input tensor so its layers sit flat in the
    model (a Grad-CAM model can then reach ``conv_pw_13_relu`` directly).
    """
    image = keras.Input((size, size), dtype="uint8", name="image")
    x = grey_to_backbone_input(image, size)
    backbone = keras.applications.MobileNet(alpha=0.25, include_top=False, weights=None, input_tensor=x)
    if weights is not None:
        path = WEIGHTS_DIR / MOBILENET_WEIGHTS if weights == "imagenet" else Path(weights)
        backbone.load_weights(path)
    return keras.Model(image, _heads(backbone.output, dropout), name="mobilenet_025_screener")


def build_xception(
    size: int = INPUT_SIZE, weights: str | os.PathLike | None = "imagenet", dropout: float = 0.0
) -> keras.Model:
    """ImageNet Xception (20.9 M parameters, ~75 ms/image on 2 CPU cores): a frozen-feature teacher, too slow to ship.

    Used by the comparison candidates only.
    """
    image = keras.Input((size, size), dtype="uint8", name="image")
    x = grey_to_backbone_input(image, size)
    backbone = keras.applications.Xception(include_top=False, weights=None, input_tensor=x)
    if weights is not None:
        path = WEIGHTS_DIR / XCEPTION_WEIGHTS if weights == "imagenet" else Path(weights)
        backbone.load_weights(path)
    return keras.Model(image, _heads(backbone.output, dropout), name="xception_screener")


def build_small_cnn(
    size: int = INPUT_SIZE, width: int = 16, dropout: float = 0.2, internal_size: int | None = 128
) -> keras.Model:
    """A compact CNN trained from scratch: the baseline every pretrained model must beat.

    It looks at the image at ``internal_size`` (antialiased resize inside the
    model, so the serving input stays 224): from-scratch CNNs gain little from
    more pixels on this data, and 128 px keeps it ~3x cheaper.
    """
    image = keras.Input((size, size), dtype="uint8", name="image")
    x = layers.Reshape((size, size, 1), name="add_channel")(image)
    x = layers.Rescaling(scale=1.0 / 127.5, offset=-1.0, name="scale_to_pm1")(x)
    if internal_size and internal_size != size:
        x = layers.Resizing(internal_size, internal_size, interpolation="area", name="downsample")(x)
    for block, filters in enumerate((width, width * 2, width * 4, width * 8, width * 8)):
        x = layers.Conv2D(filters, 3, strides=2, padding="same", use_bias=False, name=f"conv{block}a")(x)
        x = layers.BatchNormalization(name=f"bn{block}a")(x)
        x = layers.ReLU(name=f"relu{block}a")(x)
        x = layers.Conv2D(filters, 3, padding="same", use_bias=False, name=f"conv{block}b")(x)
        x = layers.BatchNormalization(name=f"bn{block}b")(x)
        x = layers.ReLU(name="last_conv" if block == 4 else f"relu{block}b")(x)
    return keras.Model(image, _heads(x, dropout), name="small_cnn_screener")


BUILDERS = {"mobilenet_025": build_mobilenet, "small_cnn": build_small_cnn, "xception": build_xception}
