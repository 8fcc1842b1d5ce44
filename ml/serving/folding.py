"""Batch normalization, and the input scaling, folded into the convolutions next to them, for serving.

At inference a BatchNormalization layer is a fixed per-channel multiply-add:
``y = (x - mean) * gamma / sqrt(var + eps) + beta``. Keras 3 still runs it as
separate element-wise passes over every activation of the layer before it,
which on a CPU costs as much as the convolutions of a MobileNet (memory-bound
passes over large feature maps, at every one of its 27 layers). Folded into
the convolution's kernel and bias it costs nothing: model v5 alone went from
364-410 to 700-735 studies/s (``bench.throughput`` (a), batches of 32, two
cores), and no probability moved in the fourth decimal (``bench.score_drift
compare``; see bench/README.md).

Only what a trained network's weights say is used, so the folded network is
the same function up to float rounding; ``fold_batch_norms`` checks that on
a probe batch and hands back the original when it is not (an unusual layer,
a future Keras), so serving can never change a score by more than rounding.
"""

from __future__ import annotations

import logging
from typing import Any

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

    def fold(network):
        copy, count = _fold(network)
        return (copy, f"{count} batch normalizations") if count else None

    return _checked(model, probe, "batch normalization", fold)


def _checked(model, probe: np.ndarray, what: str, fold):
    """``fold(model)``'s copy when it answers as ``model`` does on ``probe``; else ``model``, and the log says why.

    ``fold`` returns (copy, what it folded) or None when there is nothing to
    fold; it may raise on a network it does not understand.
    """
    try:
        folded = fold(model)
    except Exception:  # noqa: BLE001 - an optimisation: any surprise means "serve the original"
        log.warning("%s could not be folded into %s; serving it unfolded", what, model.name, exc_info=True)
        return model
    if folded is None:
        return model
    copy, done = folded
    worst = _largest_difference(model, copy, probe)
    if not worst <= TOLERANCE:  # also catches NaN
        log.warning("folding %s changed %s's outputs by %.2g; serving it unfolded", what, model.name, worst)
        return model
    log.info("folded %s into %s (outputs within %.1g)", done, model.name, worst)
    return copy


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


def _foldable_pairs(model) -> dict[str, Any]:  # keras layers
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


def fold_input_scaling(model, probe: np.ndarray):
    """A copy of ``model`` with its input scaling and grey-to-RGB copies folded into its first convolution.

    Returns ``model`` itself where there is nothing to fold or the fold fails its check.

    Our networks take 8-bit grey, scale it to [-1, 1] (``Rescaling``) and
    repeat it into the three channels ImageNet weights expect
    (``Concatenate``) before the first convolution. Those two steps are
    passes over the largest tensors of the network, and the convolution
    then reads three identical channels. Since a convolution is linear,
    ``conv(repeat(s * x + o))`` equals a convolution of ``x`` itself with the
    kernel summed over the copies and times ``s``, plus ``o`` times the
    kernel's sum as a bias. Only the border differs: "same" padding pads the
    scaled image with 0, which is ``-o / s`` in ``x``, so ``x`` is padded with
    that value explicitly and the folded convolution runs "valid". On the
    shipped model (batch normalization already folded), a batch of 32 took
    140-147 ms before and 110-114 ms after on one thread, 74-76 and 59-62 ms
    on two (fastest of 12, two runs, AMD EPYC; issue 14); logits within
    1e-5, and ``bench.score_drift compare`` finds no probability moved in
    the fourth decimal.

    Checked on ``probe`` like ``fold_batch_norms``; a network without that
    pattern at its top level (the gate's, whose backbone is nested) is
    returned as it is.
    """

    def fold(network):
        copy = _fold_input(network)
        return None if copy is None else (copy, "the input scaling and its grey-to-RGB copies")

    return _checked(model, probe, "the input scaling", fold)


def _input_pattern(model):
    """(Rescaling, Concatenate, Conv2D) feeding each other and nothing else, or None."""
    import keras

    for scaling in model.layers:
        if type(scaling) is not keras.layers.Rescaling or not scaling._outbound_nodes:
            continue
        # Each copy the Concatenate takes is an outbound node of its own.
        if len({id(node.operation) for node in scaling._outbound_nodes}) != 1:
            continue
        repeat = scaling._outbound_nodes[0].operation
        if type(repeat) is not keras.layers.Concatenate or len(repeat._outbound_nodes) != 1:
            continue
        if repeat.axis not in (-1, len(repeat.output.shape) - 1):
            continue
        sources = {id(t._keras_history.operation) for t in repeat._inbound_nodes[0].input_tensors}
        conv = repeat._outbound_nodes[0].operation
        config = conv.get_config()
        if (
            sources == {id(scaling)}
            and type(conv) is keras.layers.Conv2D
            and config.get("activation") == "linear"
            and config.get("groups", 1) == 1
            and tuple(config.get("dilation_rate", (1, 1))) == (1, 1)
            and config.get("data_format", "channels_last") == "channels_last"
            and config.get("padding") in ("same", "valid")
            and np.ndim(scaling.scale) == 0
            and np.ndim(scaling.offset) == 0
            and float(scaling.scale) != 0
        ):
            return scaling, repeat, conv
    return None


def _same_padding(size: int, kernel: int, stride: int) -> tuple[int, int]:
    """What TensorFlow's "same" adds before and after one axis (the odd one after)."""
    out = -(-size // stride)
    total = max((out - 1) * stride + kernel - size, 0)
    return total // 2, total - total // 2


def _fold_input(model):
    import keras

    pattern = _input_pattern(model)
    if pattern is None:
        return None
    scaling, repeat, conv = pattern
    scale, offset = float(scaling.scale), float(scaling.offset)
    height, width, channels = (int(d) for d in scaling.output.shape[1:])  # raises on an unknown size
    copies = len(repeat._inbound_nodes[0].input_tensors)
    kernel_h, kernel_w = conv.kernel_size
    stride_h, stride_w = conv.strides
    if conv.get_config()["padding"] == "same":
        pads = (_same_padding(height, kernel_h, stride_h), _same_padding(width, kernel_w, stride_w))
    else:
        pads = ((0, 0), (0, 0))
    fill = -offset / scale  # the raw value that scales to 0, what "same" padding puts in

    class FillPad(keras.layers.Layer):
        """Where the input scaling was: the raw image as floats, padded as the folded convolution needs."""

        def call(self, inputs):
            x = keras.ops.cast(inputs, "float32")
            return keras.ops.pad(x, ((0, 0), *pads, (0, 0)), constant_values=fill)

        def compute_output_shape(self, shape):
            return (shape[0], shape[1] + sum(pads[0]), shape[2] + sum(pads[1]), shape[3])

    class FirstCopy(keras.layers.Layer):
        """Where the grey-to-RGB copies were: the one copy the folded convolution reads."""

        def call(self, inputs):
            return inputs[0]

        def compute_output_shape(self, shapes):
            return shapes[0]

    def clone(layer):
        if layer is scaling:
            return FillPad(name=layer.name)
        if layer is repeat:
            return FirstCopy(name=layer.name)
        config = layer.get_config()
        if layer is conv:
            config.update(padding="valid", use_bias=True)
        return layer.__class__.from_config(config)

    copy = keras.models.clone_model(model, clone_function=clone)
    for layer in model.layers:
        if layer is scaling or layer is repeat or layer is conv or not layer.weights:
            continue
        copy.get_layer(layer.name).set_weights(layer.get_weights())
    weights = conv.get_weights()
    kernel = weights[0].astype(np.float64)  # (h, w, copies * channels, out)
    bias = weights[1].astype(np.float64) if len(weights) > 1 else np.zeros(kernel.shape[-1])
    summed = kernel.reshape(kernel_h, kernel_w, copies, channels, -1).sum(axis=2)
    dtype = weights[0].dtype
    copy.get_layer(conv.name).set_weights(
        [(scale * summed).astype(dtype), (bias + offset * summed.sum(axis=(0, 1, 2))).astype(dtype)]
    )
    return copy
