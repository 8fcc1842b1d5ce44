"""Grad-CAM heatmaps: geometry helpers on synthetic maps, and the map on the shipped model."""

import csv
import io
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from ml.serving.heatmap import mass_inside, overlay_png, salient_box, upsample

LUNG_BOXES = Path(__file__).resolve().parents[1] / "fixtures" / "xray" / "LUNG_BOXES.csv"


def hot_spot(row: int, col: int, size: int = 7) -> np.ndarray:
    heatmap = np.zeros((size, size), dtype=np.float32)
    heatmap[row, col] = 1.0
    return heatmap


def test_salient_box_follows_the_hot_spot():
    x0, y0, x1, y1 = salient_box(hot_spot(1, 5))
    assert 0.5 < x0 < x1 <= 1.0
    assert 0 <= y0 < y1 < 0.5
    assert salient_box(np.zeros((7, 7), dtype=np.float32)) is None


def test_mass_inside_a_box():
    heatmap = hot_spot(3, 1)
    assert mass_inside(heatmap, (0.0, 0.0, 0.5, 1.0)) > 0.95
    assert mass_inside(heatmap, (0.5, 0.0, 1.0, 1.0)) < 0.05
    assert mass_inside(np.zeros((7, 7), dtype=np.float32), (0, 0, 1, 1)) == 0.0


def test_upsample_keeps_range_and_size():
    fine = upsample(hot_spot(3, 3), 100, 60)
    assert fine.shape == (60, 100)
    assert fine.min() >= 0
    assert fine.max() <= 1


def test_overlay_has_the_original_aspect_ratio_and_transparency():
    png = overlay_png(hot_spot(2, 2), 2000, 1000, box=(0.1, 0.1, 0.5, 0.5))
    image = Image.open(io.BytesIO(png))
    assert image.mode == "RGBA"
    assert image.size == (256, 128)
    alpha = np.asarray(image)[..., 3]
    assert alpha.max() > 150
    assert alpha[-1, -1] < alpha.max()
    assert tuple(np.asarray(image)[int(0.1 * 128), int(0.3 * 256)][:3]) == (255, 255, 0)  # the box outline


@pytest.fixture(scope="module")
def explainer(served_explainer):
    return served_explainer


def fixture_inputs(paths):
    from ml.serving.decode import decode
    from ml.serving.preprocess import squash_to_input

    return np.stack([squash_to_input(decode(p).pixels) for p in paths])


def test_explaining_gives_the_same_scores_as_predicting(explainer):
    from tests.conftest import XRAYS

    images = fixture_inputs(XRAYS)
    plain = [p.probability for p in explainer.screener.predict(images)]
    explained = explainer.explain(images)
    assert np.allclose(plain, [e.prediction.probability for e in explained], atol=1e-5)
    assert all(e.heatmap.ndim == 2 and e.heatmap.min() >= 0 and e.heatmap.max() <= 1 for e in explained)


def test_the_map_changes_with_the_input(explainer):
    from tests.conftest import XRAYS

    pneumonia = [p for p in XRAYS if p.parent.name == "PNEUMONIA"]
    images = fixture_inputs(pneumonia)
    flipped = images[:, :, ::-1].copy()
    maps = [e.heatmap for e in explainer.explain(np.concatenate([images, flipped]))]
    n = len(pneumonia)
    assert not np.allclose(maps[0], maps[1], atol=0.05)  # another image, another map
    assert all(not np.allclose(maps[i], maps[n + i], atol=0.05) for i in range(n))  # the same image flipped


def test_most_of_the_map_lies_inside_the_hand_annotated_lungs():
    from ml.evaluation.heatmap_check import lung_mass
    from ml.serving.inference import current_model_dir

    results = lung_mass(current_model_dir(), LUNG_BOXES)
    assert [name for name, _, _ in results] == [row["file"] for row in csv.DictReader(LUNG_BOXES.open())]
    assert len(results) >= 4
    for name, _, inside in results:
        assert inside > 0.5, f"{name}: only {inside:.0%} of the map inside the lungs"


def test_every_fixture_above_threshold_gets_a_map_with_something_in_it(explainer):
    """An empty map next to 'pneumonia 1.000' tells the radiologist nothing (v3's Grad-CAM did that once)."""
    from tests.conftest import ORIGINALS, XRAYS

    explained = explainer.explain(fixture_inputs(XRAYS + ORIGINALS))
    flagged = [e for e in explained if e.prediction.label == "PNEUMONIA"]
    assert flagged
    assert all(e.heatmap.max() > 0 for e in flagged)


def _explainer_with(screener, **card):
    from ml.serving.heatmap import ExplainingScreener
    from ml.serving.inference import Screener

    return ExplainingScreener(Screener(screener.model, screener.card | card))


def test_the_two_methods_agree_at_the_last_layer_and_differ_deeper(explainer):
    # Before global pooling the gradient is the same at every position, so
    # HiResCAM (gradient x activation) and Grad-CAM (mean gradient x activation) coincide.
    from tests.conftest import XRAYS

    images = fixture_inputs(XRAYS)
    last = explainer.screener.card["feature_layer"]
    at_last = [
        [
            e.heatmap
            for e in _explainer_with(explainer.screener, gradcam_layer=last, heatmap_method=m, lung_field=None).explain(
                images
            )
        ]
        for m in ("gradcam", "hirescam")
    ]
    np.testing.assert_allclose(at_last[0], at_last[1], atol=1e-4)
    deeper = [
        [e.heatmap for e in _explainer_with(explainer.screener, heatmap_method=m).explain(images)]
        for m in ("gradcam", "hirescam")
    ]
    assert not np.allclose(deeper[0], deeper[1], atol=0.05)


def test_an_unknown_heatmap_method_is_refused(explainer):
    with pytest.raises(ValueError, match="unknown heatmap method 'saliency'"):
        _explainer_with(explainer.screener, heatmap_method="saliency")


def test_the_salient_box_frames_the_hottest_focus_not_every_hot_spot():
    """Two foci, one in each lung: one box over the mediastinum between them would point at neither."""
    heatmap = np.zeros((14, 14), dtype=np.float32)
    heatmap[6, 2] = 1.0
    heatmap[6, 11] = 0.9
    x0, y0, x1, y1 = salient_box(heatmap)
    assert x1 < 0.5, "the box reaches past the midline to the weaker focus"
    assert x0 < 2.5 / 14 < x1
    assert y0 < 6.5 / 14 < y1


def test_lung_weighting_keeps_what_is_inside_and_reports_what_is_not():
    from ml.serving.heatmap import lung_weighted

    cam = np.zeros((14, 14), dtype=np.float32)
    cam[7, 3] = 1.0  # in the lung
    cam[1, 7] = 1.0  # on the neck
    lung = np.zeros((14, 14))
    lung[3:12, 1:6] = 1.0
    weighted, outside = lung_weighted(cam, lung)
    assert outside == pytest.approx(0.5)
    assert weighted[7, 3] == 1.0
    assert weighted[1, 7] == 0.0
    empty, nothing = lung_weighted(np.zeros((14, 14), dtype=np.float32), lung)
    assert not empty.any()
    assert nothing == 0.0


def test_the_shipped_map_stays_on_the_hand_drawn_lungs_and_says_what_it_left_out(explainer):
    """The fixtures' boxes were drawn before the lung-field head existed and were not used to fit it."""
    from ml.evaluation.heatmap_check import lung_mass
    from ml.serving.inference import current_model_dir

    assert explainer.lung_field is not None, "the shipped card has no lung-field head"
    for name, _, inside in lung_mass(current_model_dir(), LUNG_BOXES):
        assert inside >= 0.85, f"{name}: only {inside:.0%} of the map inside the lungs"
    from tests.conftest import XRAYS

    explained = explainer.explain(fixture_inputs(XRAYS))
    assert all(e.outside_lungs is not None and 0 <= e.outside_lungs <= 1 for e in explained)


def test_the_lung_field_finds_lungs_where_the_boxes_are_and_not_in_the_corners(explainer):
    import keras

    from ml.serving.heatmap import boxes_mask

    rows = list(csv.DictReader(LUNG_BOXES.open()))
    images = fixture_inputs([LUNG_BOXES.parent / r["file"] for r in rows])
    layer = explainer.screener.model.get_layer(explainer.lung_field.layer)
    features = np.asarray(keras.Model(explainer.screener.model.input, layer.output)(images))
    logits = features @ explainer.lung_field.weights + explainer.lung_field.position_logit
    lung = 1 / (1 + np.exp(-logits))
    for row, p in zip(rows, lung, strict=True):
        box = boxes_mask([tuple(float(row[k]) for k in ("x0", "y0", "x1", "y1"))], 14)
        # The fixture box holds both lungs and the mediastinum between them, so ask for a contrast, not a level.
        assert p[box].mean() > 3 * p[~box].mean(), row["file"]
        assert max(p[0, 0], p[0, -1], p[-1, 0], p[-1, -1]) < 0.2, row["file"]


def test_a_lung_field_for_another_layer_is_refused(explainer):
    spec = dict(explainer.card["lung_field"], layer="conv_pw_13_relu")
    with pytest.raises(ValueError, match="lung field reads conv_pw_13_relu"):
        _explainer_with(explainer.screener, lung_field=spec)
