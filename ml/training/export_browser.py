"""Export the served model, the gate and the population check for the in-browser preview (issue 16).

The submit page scores each chosen image in the browser with TensorFlow.js
(``webapp/static/js/preview-engine.js``). The ``tensorflowjs`` converter does
not read Keras 3 ``.keras`` files, and a converted TF graph would hide what
the browser actually computes; so this writes the networks as a short list
of plain layers (convolution, depthwise convolution, ReLU6, padding,
pooling, dense) with their weights in one little-endian binary, which the
page runs with a dozen tf.js ops. Batch normalisation is folded into the
convolution before it: the browser then does one op where Keras does two,
at a cost of float32 rounding (about 1e-6 of a logit; the unit tests pin it).

Written to ``webapp/static/preview/`` (committed, so neither the Docker image
nor ``make install`` needs TensorFlow.js tooling, and nothing is fetched at
run time):

* ``model.json``: the layer lists, the cards' numbers the browser needs
  (calibration, threshold, gate thresholds, population threshold) and where
  each tensor lies in ``weights.bin``;
* ``weights.bin``: the tensors;
* ``manifest.json``: what the export depends on (``ml.serving.browser_export``:
  the sha256 of the weight files and the card values the browser uses), the
  sha256 of every source file for provenance, and of the two files above.
  ``tests/ml/test_export_browser.py`` fails when it does not match what
  ``ml/models/CURRENT`` names, and the submit page offers no preview when the
  served model is not the exported one.

    .venv/bin/python -m ml.training.export_browser            # after changing ml/models/CURRENT
    .venv/bin/python -m ml.training.export_browser --check    # exit 1 when the committed export is stale
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
from pathlib import Path

import numpy as np

from ml.serving import gate as gate_module
from ml.serving import population_check
from ml.serving.browser_export import dependencies, sha256_file
from ml.serving.inference import MODELS_ROOT, current_model_dir

REPO = Path(__file__).resolve().parents[2]
DEFAULT_OUT = REPO / "webapp" / "static" / "preview"
FORMAT = 1
MODEL_FILE, WEIGHTS_FILE, MANIFEST_FILE = "model.json", "weights.bin", "manifest.json"
SCREENER_OUTPUT = "pneumonia"  # the viral head is not shown in the preview
GATE_OUTPUT = "features"


class UnsupportedLayer(ValueError):
    """A layer the browser runtime has no op for; export refuses rather than guessing."""


class WeightWriter:
    """Tensors appended to one buffer, 8-byte aligned so the browser can view them as typed arrays in place."""

    def __init__(self) -> None:
        self._parts: list[bytes] = []
        self._size = 0

    def add(self, array: np.ndarray, dtype: str = "float32") -> dict:
        data = np.ascontiguousarray(np.asarray(array, dtype=np.dtype(dtype).newbyteorder("<")))
        padding = (-self._size) % 8
        if padding:
            self._parts.append(bytes(padding))
            self._size += padding
        entry = {"offset": self._size, "shape": list(data.shape), "dtype": dtype}
        raw = data.tobytes()
        self._parts.append(raw)
        self._size += len(raw)
        return entry

    def getvalue(self) -> bytes:
        return b"".join(self._parts)


def _operation_name(tensor) -> str:
    return tensor._keras_history.operation.name


def _inbound(layer, names: set[str]) -> list[str]:
    """Names of the layers feeding ``layer`` inside the model whose layer names are ``names``.

    A layer has one inbound node per call; a nested model (the gate's
    MobileNet) also has the nodes of its own construction, so the node that
    belongs to this graph is the one whose inputs come from this graph.
    """
    candidates = []
    for node in layer._inbound_nodes:
        sources = [_operation_name(t) for t in node.input_tensors]
        if sources and all(s in names for s in sources):
            candidates.append(sources)
    if len(candidates) != 1:
        raise UnsupportedLayer(f"{layer.name}: expected one call inside the graph, found {len(candidates)}")
    return candidates[0]


def _fold_batch_norm(
    kernel: np.ndarray, bias: np.ndarray | None, bn, *, depthwise: bool
) -> tuple[np.ndarray, np.ndarray]:
    """The convolution whose output equals BN(conv(x)), computed in float64 and stored as float32."""
    gamma, beta, mean, variance = (np.asarray(w, np.float64) for w in _bn_weights(bn))
    scale = gamma / np.sqrt(variance + float(bn.epsilon))
    kernel = np.asarray(kernel, np.float64)
    if depthwise:  # (kh, kw, in, multiplier): output channel = in * multiplier + m
        folded = kernel * scale.reshape(kernel.shape[2], kernel.shape[3])
    else:  # (kh, kw, in, out)
        folded = kernel * scale
    base = np.zeros_like(scale) if bias is None else np.asarray(bias, np.float64)
    return folded, (base - mean) * scale + beta


def _bn_weights(bn) -> list[np.ndarray]:
    config = bn.get_config()
    if (
        not config.get("center", True)
        or not config.get("scale", True)
        or int(np.ravel(config["axis"])[0]) not in (-1, 3)
    ):
        raise UnsupportedLayer(f"{bn.name}: only channels-last BatchNormalization with centre and scale")
    gamma, beta, mean, variance = (np.asarray(w) for w in bn.get_weights())
    return [gamma, beta, mean, variance]


def export_graph(model, output: str, writer: WeightWriter) -> dict:
    """The layers ``output`` depends on, flattened through nested models, in evaluation order.

    Returns ``{"input": name, "output": name, "nodes": [...]}``. Each node has
    ``name``, ``op``, ``inputs`` and its attributes; weights are references
    into ``writer``.
    """
    nodes: list[dict] = []
    aliases: dict[str, str] = {}  # a nested model's name -> its output node
    _walk(model, {}, nodes, aliases)
    out = aliases.get(output, output)
    needed = _needed(nodes, out)
    nodes = [node for node in nodes if node["name"] in needed]
    nodes = _fold(nodes, writer)
    inputs = [node["name"] for node in nodes if node["op"] == "input"]
    if len(inputs) != 1:
        raise UnsupportedLayer(f"expected one input, found {inputs}")
    return {"input": inputs[0], "output": out, "nodes": nodes}


def _walk(model, input_map: dict[str, str], nodes: list[dict], aliases: dict[str, str]) -> None:
    """Append ``model``'s layers to ``nodes``, inlining nested models so the browser runs one flat list.

    A nested model's input layers become aliases of what feeds them, and its
    name an alias of its output layer.
    """
    names = {layer.name for layer in model.layers}
    for layer in model.layers:
        kind = layer.__class__.__name__
        if kind == "InputLayer":
            if layer.name in input_map:
                aliases[layer.name] = input_map[layer.name]
            else:
                nodes.append({"name": layer.name, "op": "input", "inputs": [], "shape": list(layer.output.shape[1:])})
            continue
        inputs = [aliases.get(name, name) for name in _inbound(layer, names)]
        if hasattr(layer, "layers") and hasattr(layer, "_inbound_nodes") and kind in ("Functional", "Model"):
            inner_inputs = [t._keras_history.operation.name for t in layer.inputs]
            if len(inner_inputs) != len(inputs):
                raise UnsupportedLayer(f"{layer.name}: nested model with {len(inner_inputs)} inputs")
            _walk(layer, dict(zip(inner_inputs, inputs, strict=True)), nodes, aliases)
            aliases[layer.name] = aliases.get(_operation_name(layer.outputs[0]), _operation_name(layer.outputs[0]))
            continue
        node = {"name": layer.name, "inputs": inputs, **_describe(layer)}
        node["_layer"] = layer
        nodes.append(node)


def _describe(layer) -> dict:
    kind = layer.__class__.__name__
    config = layer.get_config()
    if config.get("data_format", "channels_last") != "channels_last":
        raise UnsupportedLayer(f"{layer.name}: channels_first")
    if "activation" in config and config["activation"] != "linear":
        raise UnsupportedLayer(f"{layer.name}: fused activation {config['activation']}")
    if tuple(config.get("dilation_rate", (1, 1))) != (1, 1):
        raise UnsupportedLayer(f"{layer.name}: dilation")
    if kind == "Reshape":
        return {"op": "reshape", "shape": list(config["target_shape"])}
    if kind == "Rescaling":
        return {"op": "rescale", "scale": float(config["scale"]), "offset": float(config["offset"])}
    if kind == "Concatenate":
        return {"op": "concat", "axis": int(config["axis"])}
    if kind in ("Conv2D", "DepthwiseConv2D"):
        if kind == "DepthwiseConv2D" and int(config["depth_multiplier"]) != 1:
            raise UnsupportedLayer(f"{layer.name}: depth multiplier")
        if int(config.get("groups", 1)) != 1:
            raise UnsupportedLayer(f"{layer.name}: grouped convolution")
        return {
            "op": "conv2d" if kind == "Conv2D" else "depthwise",
            "strides": list(config["strides"]),
            "padding": config["padding"],
        }
    if kind == "BatchNormalization":
        return {"op": "batchnorm"}
    if kind == "ReLU":
        if float(config.get("negative_slope") or 0.0) != 0.0 or float(config.get("threshold") or 0.0) != 0.0:
            raise UnsupportedLayer(f"{layer.name}: leaky or thresholded ReLU")
        max_value = config.get("max_value")
        return {"op": "relu", "max": None if max_value is None else float(max_value)}
    if kind == "ZeroPadding2D":
        (top, bottom), (left, right) = config["padding"]
        return {"op": "pad", "padding": [[top, bottom], [left, right]]}
    if kind == "AveragePooling2D":
        return {
            "op": "avgpool",
            "pool": list(config["pool_size"]),
            "strides": list(config["strides"] or config["pool_size"]),
            "padding": config["padding"],
        }
    if kind == "GlobalAveragePooling2D":
        if config.get("keepdims"):
            raise UnsupportedLayer(f"{layer.name}: keepdims")
        return {"op": "global_average"}
    if kind == "Flatten":
        return {"op": "flatten"}
    if kind == "Dense":
        return {"op": "dense"}
    if kind == "Dropout":
        return {"op": "identity"}
    raise UnsupportedLayer(f"{layer.name}: no browser op for {kind}")


def _needed(nodes: list[dict], output: str) -> set[str]:
    by_name = {node["name"]: node for node in nodes}
    needed, stack = set(), [output]
    while stack:
        name = stack.pop()
        if name in needed:
            continue
        needed.add(name)
        stack.extend(by_name[name]["inputs"])
    return needed


def _fold(nodes: list[dict], writer: WeightWriter) -> list[dict]:
    """Write weights; fold each BatchNormalization into the convolution that alone feeds it."""
    consumers: dict[str, int] = {}
    for node in nodes:
        for name in node["inputs"]:
            consumers[name] = consumers.get(name, 0) + 1
    by_name = {node["name"]: node for node in nodes}
    renamed: dict[str, str] = {}
    out = []
    for node in nodes:
        node["inputs"] = [renamed.get(name, name) for name in node["inputs"]]
        layer = node.pop("_layer", None)
        if node["op"] == "batchnorm":
            source = by_name[node["inputs"][0]]
            if source["op"] not in ("conv2d", "depthwise") or consumers.get(source["name"], 0) != 1:
                raise UnsupportedLayer(f"{node['name']}: BatchNormalization not right after a convolution")
            depthwise = source["op"] == "depthwise"
            kernel, bias = _fold_batch_norm(source["_kernel"], source.get("_bias"), layer, depthwise=depthwise)
            source["kernel"], source["bias"] = writer.add(kernel), writer.add(bias)
            source["folded"] = node["name"]
            renamed[node["name"]] = source["name"]
            continue
        if node["op"] in ("conv2d", "depthwise", "dense"):
            weights = layer.get_weights()
            node["_kernel"] = weights[0]
            node["_bias"] = weights[1] if len(weights) > 1 else None
        out.append(node)
    for node in out:
        if "_kernel" in node:
            kernel, bias = node.pop("_kernel"), node.pop("_bias")
            if "kernel" not in node:
                node["kernel"] = writer.add(kernel)
                node["bias"] = writer.add(
                    np.zeros(kernel.shape[-2] if node["op"] == "depthwise" else kernel.shape[-1])
                    if bias is None
                    else bias
                )
    return out


def tensor(weights: bytes, entry: dict) -> np.ndarray:
    """A tensor of ``weights.bin`` by its ``model.json`` entry."""
    dtype = np.dtype(entry["dtype"]).newbyteorder("<")
    count = int(np.prod(entry["shape"], dtype=np.int64))
    return np.frombuffer(weights, dtype=dtype, count=count, offset=entry["offset"]).reshape(entry["shape"])


def reference_forward(graph: dict, weights: bytes, x: np.ndarray) -> np.ndarray:
    """What the browser runtime computes for a batch ``x``, in float32 numpy: the export's meaning, for tests.

    ``preview-engine.js`` runs the same ops with tf.js; the unit tests check
    this against Keras, and the browser test checks the browser against the
    server, so a misread layer shows up in one or the other.
    """
    values = {graph["input"]: np.asarray(x, np.float32)}
    for node in graph["nodes"]:
        if node["op"] == "input":
            continue
        args = [values[name] for name in node["inputs"]]
        values[node["name"]] = _numpy_op(node, args, weights)
    return values[graph["output"]]


def _same_padding(size: int, kernel: int, stride: int) -> tuple[int, int]:
    total = max((-(-size // stride) - 1) * stride + kernel - size, 0)
    return total // 2, total - total // 2


def _windows(x: np.ndarray, kh: int, kw: int, strides, padding: str):
    """(i, j, slice) for each kernel offset: x padded as TensorFlow pads, strided."""
    sh, sw = strides
    if padding == "same":
        x = np.pad(x, ((0, 0), _same_padding(x.shape[1], kh, sh), _same_padding(x.shape[2], kw, sw), (0, 0)))
    out_h, out_w = (x.shape[1] - kh) // sh + 1, (x.shape[2] - kw) // sw + 1
    for i in range(kh):
        for j in range(kw):
            yield i, j, x[:, i : i + sh * (out_h - 1) + 1 : sh, j : j + sw * (out_w - 1) + 1 : sw, :]


def _numpy_op(node: dict, args: list[np.ndarray], weights: bytes) -> np.ndarray:
    op, x = node["op"], args[0]
    if op == "reshape":
        return x.reshape((x.shape[0], *node["shape"]))
    if op == "rescale":
        return x * np.float32(node["scale"]) + np.float32(node["offset"])
    if op == "concat":
        return np.concatenate(args, axis=node["axis"])
    if op in ("conv2d", "depthwise"):
        kernel, bias = tensor(weights, node["kernel"]), tensor(weights, node["bias"])
        out = None
        for i, j, window in _windows(x, kernel.shape[0], kernel.shape[1], node["strides"], node["padding"]):
            part = window @ kernel[i, j] if op == "conv2d" else window * kernel[i, j, :, 0]
            out = part if out is None else out + part
        return out + bias
    if op == "relu":
        return np.clip(x, 0, node["max"]) if node["max"] is not None else np.maximum(x, 0)
    if op == "pad":
        (top, bottom), (left, right) = node["padding"]
        return np.pad(x, ((0, 0), (top, bottom), (left, right), (0, 0)))
    if op == "avgpool":
        (ph, pw), count = node["pool"], node["pool"][0] * node["pool"][1]
        windows = [w for _, _, w in _windows(x, ph, pw, node["strides"], node["padding"])]
        return sum(windows) / np.float32(count)
    if op == "global_average":
        return x.mean(axis=(1, 2))
    if op == "flatten":
        return x.reshape(x.shape[0], -1)
    if op == "dense":
        return x @ tensor(weights, node["kernel"]) + tensor(weights, node["bias"])
    if op == "identity":
        return x
    raise UnsupportedLayer(f"no reference for {op}")


def source_files(model_dir: Path, gate_dir: Path, population_dir: Path) -> dict[str, dict[str, str]]:
    """sha256 of every file the export was made from, by path: provenance for a reader of the manifest.

    Staleness is judged on ``ml.serving.browser_export.dependencies`` instead,
    so that editing a card's prose does not switch the preview off.
    """
    files = {
        "model": [model_dir / "model.keras", model_dir / "card.json"],
        "gate": [gate_dir / gate_module.BACKBONE_FILE, gate_dir / gate_module.PARAMS_FILE, gate_dir / "card.json"],
        "population": [population_dir / population_check.PARAMS_FILE, population_dir / "card.json"],
    }
    return {part: {_relative(path): sha256_file(path) for path in paths} for part, paths in files.items()}


def _relative(path: Path) -> str:
    try:
        return str(path.resolve().relative_to(REPO))
    except ValueError:
        return str(path)


def build(
    model_dir: Path | None = None, gate_dir: Path | None = None, population_dir: Path | None = None
) -> tuple[dict, bytes, dict]:
    """``(model.json, weights.bin, manifest.json)`` contents for the given model folders (default: what is served)."""
    import keras

    from ml.serving.gate import ChestXrayGate
    from ml.serving.population_check import PopulationCheck

    model_dir = Path(model_dir) if model_dir else current_model_dir(MODELS_ROOT)
    gate_dir = Path(gate_dir) if gate_dir else gate_module.DEFAULT_GATE_DIR
    population_dir = Path(population_dir) if population_dir else population_check.DEFAULT_DIR
    card = json.loads((model_dir / "card.json").read_text())
    screener = keras.models.load_model(model_dir / "model.keras", compile=False)
    gate = ChestXrayGate.load(gate_dir, fold=False)  # the network as trained, layer by layer
    check = PopulationCheck.load(population_dir)
    if check.gate_version != gate.version:
        raise ValueError(f"{check.version} was fitted on {check.gate_version} features, not {gate.version}'s")

    writer = WeightWriter()
    screener_graph = export_graph(screener, SCREENER_OUTPUT, writer)
    gate_graph = export_graph(gate._feature_model, GATE_OUTPUT, writer)
    params = gate._params
    gate_params = {
        name: writer.add(params[name], "float32")
        for name in (
            "feature_mean",
            "pca_components",
            "pca_variances",
            "residual_variance",
            "head_mean",
            "head_scale",
            "head_weights",
            "head_bias",
        )
    }
    population_params = {
        name: writer.add(np.asarray(value, np.float64).reshape(-1), "float64")
        for name, value in (
            ("mean", check._mean),
            ("scale", check._scale),
            ("coef", check._coef),
            ("intercept", [check._intercept]),
        )
    }
    weights = writer.getvalue()
    depends_on = dependencies(model_dir, gate_dir, population_dir)
    export_id = hashlib.sha256(json.dumps(depends_on, sort_keys=True).encode()).hexdigest()[:16]
    model = {
        "format": FORMAT,
        "export_id": export_id,
        "screener": {
            "version": str(card["version"]),
            "input_size": int(card["input_size"]),
            "threshold": float(card["threshold"]),
            "temperature": float(card["temperature"]),
            "bias": float(card.get("bias", 0.0)),
            "calibration_prevalence": card.get("calibration_prevalence"),
            "graph": screener_graph,
        },
        "gate": {
            "version": gate.version,
            "classes": list(gate.card["head"]["classes"]),
            "thresholds": dict(gate.card["thresholds"]),
            "graph": gate_graph,
            "params": gate_params,
        },
        "population": {
            "version": check.version,
            "gate_version": check.gate_version,
            "threshold_logit": check.threshold_logit,
            "params": population_params,
        },
    }
    model_bytes = _json_bytes(model)
    manifest = {
        "format": FORMAT,
        "export_id": export_id,
        "made_by": "python -m ml.training.export_browser",
        "screener_version": str(card["version"]),
        "gate_version": gate.version,
        "population_version": check.version,
        "depends_on": depends_on,
        "sources": source_files(model_dir, gate_dir, population_dir),
        "files": {
            MODEL_FILE: hashlib.sha256(model_bytes).hexdigest(),
            WEIGHTS_FILE: hashlib.sha256(weights).hexdigest(),
        },
    }
    return model, weights, manifest


def _json_bytes(value: dict) -> bytes:
    return (json.dumps(value, indent=1, sort_keys=True) + "\n").encode()


def write(out: Path, model: dict, weights: bytes, manifest: dict) -> None:
    out.mkdir(parents=True, exist_ok=True)
    (out / MODEL_FILE).write_bytes(_json_bytes(model))
    (out / WEIGHTS_FILE).write_bytes(weights)
    (out / MANIFEST_FILE).write_bytes(_json_bytes(manifest))


def stale_reasons(out: Path = DEFAULT_OUT) -> list[str]:
    """Why the committed export does not belong to the served models (empty when it does). Needs no TensorFlow."""
    manifest_path = out / MANIFEST_FILE
    if not manifest_path.is_file():
        return [f"{manifest_path} is missing"]
    manifest = json.loads(manifest_path.read_text())
    expected = dependencies(current_model_dir(MODELS_ROOT))
    reasons = []
    for part, served in expected.items():
        exported = manifest.get("depends_on", {}).get(part)
        if exported != served:
            reasons.append(f"the export's {part} is {exported}, but the served one is {served}")
    for name, digest in manifest.get("files", {}).items():
        path = out / name
        if not path.is_file() or sha256_file(path) != digest:
            reasons.append(f"{path} does not match its sha256 in {manifest_path}")
    return reasons


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    parser.add_argument("--check", action="store_true", help="only say whether --out is stale; exit 1 if it is")
    args = parser.parse_args(argv)
    if args.check:
        reasons = stale_reasons(args.out)
        for reason in reasons:
            print(f"stale: {reason}", file=sys.stderr)
        return 1 if reasons else 0
    model, weights, manifest = build()
    write(args.out, model, weights, manifest)
    print(f"wrote {args.out} ({len(weights) / 1e6:.2f} MB of weights) for {manifest['screener_version']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
