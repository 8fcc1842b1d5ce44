"""The browser export (``ml.training.export_browser``): faithful to Keras, reproducible, never stale."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from ml.training import export_browser
from ml.training.export_browser import UnsupportedLayer, WeightWriter, export_graph, reference_forward

OUT = export_browser.DEFAULT_OUT


def test_the_committed_export_was_made_from_the_served_models():
    """Fails after ml/models/CURRENT (or a gate or population folder) changes until the export is rebuilt."""
    assert export_browser.stale_reasons() == [], "run: .venv/bin/python -m ml.training.export_browser"
    assert export_browser.main(["--check"]) == 0


def test_a_changed_source_or_file_makes_it_stale(tmp_path):
    for name in (export_browser.MODEL_FILE, export_browser.WEIGHTS_FILE, export_browser.MANIFEST_FILE):
        shutil.copy(OUT / name, tmp_path / name)
    manifest = json.loads((tmp_path / "manifest.json").read_text())
    manifest["depends_on"]["model"]["files"]["model.keras"] = "0" * 64
    (tmp_path / "manifest.json").write_text(json.dumps(manifest))
    (tmp_path / "weights.bin").write_bytes(b"not the weights")
    reasons = export_browser.stale_reasons(tmp_path)
    assert len(reasons) == 2
    assert "model" in reasons[0]
    assert "weights.bin" in reasons[1]
    assert export_browser.main(["--check", "--out", str(tmp_path)]) == 1


def test_a_cards_prose_does_not_matter_but_its_threshold_does(tmp_path):
    from ml.serving.browser_export import dependencies
    from ml.serving.inference import current_model_dir

    folder = tmp_path / "model"
    shutil.copytree(current_model_dir(), folder)
    before = dependencies(folder)
    card = json.loads((folder / "card.json").read_text())
    card["limitations"] = "rewritten"
    (folder / "card.json").write_text(json.dumps(card))
    assert dependencies(folder) == before
    card["threshold"] = 0.5
    (folder / "card.json").write_text(json.dumps(card))
    assert dependencies(folder)["model"]["card"]["threshold"] == 0.5 != before["model"]["card"]["threshold"]


def test_exporting_again_writes_the_committed_bytes(tmp_path):
    model, weights, manifest = export_browser.build()
    export_browser.write(tmp_path, model, weights, manifest)
    for name in (export_browser.MODEL_FILE, export_browser.WEIGHTS_FILE, export_browser.MANIFEST_FILE):
        assert (tmp_path / name).read_bytes() == (OUT / name).read_bytes(), name


@pytest.fixture(scope="module")
def committed():
    return json.loads((OUT / "model.json").read_text()), (OUT / "weights.bin").read_bytes()


def test_the_exported_screener_gives_keras_logits(committed, fixture_images):
    import keras

    from ml.serving.inference import current_model_dir

    model, weights = committed
    keras_model = keras.models.load_model(current_model_dir() / "model.keras", compile=False)
    expected = np.asarray(keras_model(fixture_images, training=False)["pneumonia"])
    got = reference_forward(model["screener"]["graph"], weights, fixture_images.astype(np.float32))
    assert got.shape == expected.shape == (len(fixture_images),)
    np.testing.assert_allclose(got, expected, atol=1e-4)
    assert model["screener"]["version"] == current_model_dir().name


def test_the_exported_gate_gives_the_gates_features_and_parameters(
    committed, fixture_images, served_gate, served_population_check
):
    model, weights = committed
    gate, check = served_gate, served_population_check
    expected = gate.features(fixture_images)
    got = reference_forward(model["gate"]["graph"], weights, fixture_images[..., None].astype(np.float32))
    np.testing.assert_allclose(got, expected, atol=2e-4)
    for name, value in gate._params.items():
        np.testing.assert_array_equal(export_browser.tensor(weights, model["gate"]["params"][name]), value)
    np.testing.assert_array_equal(export_browser.tensor(weights, model["population"]["params"]["coef"]), check._coef)
    assert model["gate"]["thresholds"] == gate.card["thresholds"]
    assert model["population"]["threshold_logit"] == check.threshold_logit


def _tiny(keras, activation=None):
    from keras import layers

    image = keras.Input((16, 16), name="image")
    x = layers.Reshape((16, 16, 1))(image)
    x = layers.Rescaling(1 / 127.5, offset=-1.0)(x)
    x = layers.Conv2D(4, 3, strides=2, padding="same", use_bias=False, activation=activation, name="c")(x)
    x = layers.BatchNormalization(name="c_bn")(x)
    x = layers.ReLU(6.0)(x)
    x = layers.ZeroPadding2D(((0, 1), (0, 1)))(x)
    x = layers.DepthwiseConv2D(3, strides=2, padding="valid", use_bias=False, name="d")(x)
    x = layers.BatchNormalization(name="d_bn")(x)
    x = layers.ReLU(6.0)(x)
    x = layers.Conv2D(3, 1, name="p")(x)
    x = layers.GlobalAveragePooling2D()(x)
    out = layers.Reshape((), name="out")(layers.Dense(1, name="logit")(x))
    model = keras.Model(image, {"out": out})
    rng = np.random.default_rng(0)
    for layer in model.layers:
        if isinstance(layer, layers.BatchNormalization):
            gamma, beta, mean, var = layer.get_weights()
            layer.set_weights(
                [
                    rng.uniform(0.5, 2, gamma.shape),
                    rng.normal(0, 0.5, beta.shape),
                    rng.normal(0, 1, mean.shape),
                    rng.uniform(0.2, 3, var.shape),
                ]  # fmt: skip
            )
    return model


def test_batch_norm_is_folded_into_the_convolution_before_it():
    import keras

    model = _tiny(keras)
    graph = export_graph(model, "out", writer := WeightWriter())
    ops = [node["op"] for node in graph["nodes"]]
    assert "batchnorm" not in ops
    assert ops.count("relu") == 2
    assert [node["folded"] for node in graph["nodes"] if "folded" in node] == ["c_bn", "d_bn"]
    x = np.random.default_rng(1).integers(0, 256, (3, 16, 16)).astype(np.float32)
    expected = np.asarray(model(x, training=False)["out"])
    np.testing.assert_allclose(reference_forward(graph, writer.getvalue(), x), expected, atol=1e-5)


def test_a_layer_the_browser_cannot_run_is_refused():
    import keras

    with pytest.raises(UnsupportedLayer, match="fused activation"):
        export_graph(_tiny(keras, activation="relu"), "out", WeightWriter())


def test_weights_are_aligned_little_endian_and_typed():
    writer = WeightWriter()
    first = writer.add(np.arange(3, dtype=np.float32))
    second = writer.add(np.array([1.5, 2.5]), "float64")
    assert first == {"offset": 0, "shape": [3], "dtype": "float32"}
    assert second["offset"] == 16
    assert second["dtype"] == "float64"
    np.testing.assert_array_equal(export_browser.tensor(writer.getvalue(), second), [1.5, 2.5])
