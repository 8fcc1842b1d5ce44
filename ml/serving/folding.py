"""Batch normalization folded into the convolution before it, for serving.

At inference a BatchNormalization layer is a fixed per-channel multiply-add:
``y = (x - mean) * gamma / sqrt(var + eps) + beta``. Keras 3 still runs it as
separate element-wise passes over every activation of the layer before it,
which on a CPU costs as much as the convolutions of a MobileNet (memory-bound
passes over large feature maps, at every one of its 27 layers). Folded into
the convolution's kernel and bias it costs nothing: model v5 alone went from
364-410 to 700-735 studies/s (``bench.throughput`` (a), batches of 32, two
cores), and no probability moved in the fourth decimal (``bench.score_drift
compare``; see README, "Benchmarks").

Only what a trained network's weights say is used, so the folded network is
the same function up to float rounding; ``fold_batch_norms`` checks that on
a probe batch and hands back the original when it is not (an unusual layer,
a future Keras), so serving can never change a score by more than rounding.
"""

from __future__ import annotations

import logging

import numpy as np

log = logging.getLogger(__name__)

# Largest difference in any output tolerated between the folded and the
# original network on the probe batch (logits, or features for the gate).
TOLERANCE = 1e-3


def fold_batch_norms(model, probe: np.ndarray):
    """A copy of ``model`` with every foldable BatchNormalization folded into its convolution, or ``model``.

    ``probe`` is a batch the model accepts; both networks run on it and the
    copy is returned only when every output agrees within ``TOLERANCE``.
    Nested models (a backbone inside a wrapper) are folded too.
    """
    try:
        folded, count = _fold(model)
    except Exception:  # noqa: BLE001 - an optimisation: any surprise means "serve the original"
        log.warning("batch normalization could not be folded into %s; serving it unfolded", model.name, exc_info=True)
        return model
    if count == 0:
        return model
    worst = _largest_difference(model, folded, probe)
    if not worst <= TOLERANCE:  # also catches NaN
        log.warning("folding batch normalization changed %s's outputs by %.2g; serving it unfolded", model.name, worst)
        return model
    log.info("folded %d batch normalizations into %s (outputs within %.1g)", count, model.name, worst)
    return folded


def _largest_difference(a, b, probe: np.ndarray) -> float:
    import keras

    outputs_a = keras.tree.flatten(a(probe, training=False))
    outputs_b = keras.tree.flatten(b(probe, training=False))
    return max(float(np.max(np.abs(np.asarray(x) - np.asarray(y)))) for x, y in zip(outputs_a, outputs_b, strict=True))


def _fold(model):
    """(folded copy, number of folds) of a functional model; raises on anything it does not understand."""
    import keras

    pairs = _foldable_pairs(model)
    nested: dict[str, tuple] = {}

    class PassThrough(keras.layers.Layer):
        """Where a folded BatchNormalization was: nothing left to compute."""

        def call(self, inputs, mask=None, training=None):
            return inputs

        def compute_output_shape(self, shape):
            return shape

    folded_norms = {norm.name for norm in pairs.values()}

    def clone(layer):
        if isinstance(layer, keras.Model):
            nested[layer.name] = _fold(layer)
            return nested[layer.name][0]
        if layer.name in folded_norms:
            return PassThrough(name=layer.name)
        config = layer.get_config()
        if layer.name in pairs:
            config["use_bias"] = True
        return layer.__class__.from_config(config)

    copy = keras.models.clone_model(model, clone_function=clone)
    for layer in model.layers:
        if layer.name in nested or layer.name in folded_norms or not layer.weights:
            continue
        target = copy.get_layer(layer.name)
        if layer.name in pairs:
            target.set_weights(_folded_weights(layer, pairs[layer.name]))
        else:
            target.set_weights(layer.get_weights())
    return copy, len(pairs) + sum(count for _, count in nested.values())


def _foldable_pairs(model) -> dict[str, object]:
    """{convolution name: the BatchNormalization that is its only consumer}, for linear convolutions."""
    import keras

    pairs = {}
    for layer in model.layers:
        if not isinstance(layer, keras.layers.BatchNormalization) or len(layer._inbound_nodes) != 1:
            continue
        if layer.axis not in (-1, len(layer.input.shape) - 1):
            continue
        sources = [t._keras_history.operation for t in layer._inbound_nodes[0].input_tensors]
        if len(sources) != 1:
            continue
        conv = sources[0]
        if (
            type(conv) in (keras.layers.Conv2D, keras.layers.DepthwiseConv2D)  # not subclasses: their maths may differ
            and conv.get_config().get("activation") == "linear"
            and len(conv._inbound_nodes) == 1
            and len(conv._outbound_nodes) == 1
        ):
            pairs[conv.name] = layer
    return pairs


def _folded_weights(conv, norm) -> list[np.ndarray]:
    import keras

    mean = np.asarray(norm.moving_mean, dtype=np.float64)
    variance = np.asarray(norm.moving_variance, dtype=np.float64)
    gamma = np.asarray(norm.gamma, dtype=np.float64) if norm.scale else np.ones_like(mean)
    beta = np.asarray(norm.beta, dtype=np.float64) if norm.center else np.zeros_like(mean)
    scale = gamma / np.sqrt(variance + norm.epsilon)
    weights = conv.get_weights()
    kernel = weights[0].astype(np.float64)
    bias = weights[1].astype(np.float64) if len(weights) > 1 else np.zeros_like(mean)
    if isinstance(conv, keras.layers.DepthwiseConv2D):
        # (h, w, channels, multiplier): output channel c * multiplier + m.
        kernel = kernel * scale.reshape(kernel.shape[2], kernel.shape[3])[None, None]
    else:
        kernel = kernel * scale  # (h, w, in, out): the last axis
    dtype = weights[0].dtype
    return [kernel.astype(dtype), ((bias - mean) * scale + beta).astype(dtype)]
