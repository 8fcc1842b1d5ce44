"""Preparing a chunk on several threads gives exactly what one thread gives, in order, failures in place."""

from __future__ import annotations

import numpy as np
import pytest

from ml.serving import pipeline
from ml.serving.decode import DecodeFailed, InputRejected
from tests.ml.conftest import FIXTURES, ORIGINALS, XRAY

BAD = FIXTURES / "bad"


@pytest.fixture
def sources():
    good = sorted(XRAY.rglob("*.jpeg"))[:6] + sorted(ORIGINALS.glob("*.jpeg")) + [BAD / "mono2.dcm"]
    bad = [BAD / "truncated.jpeg", BAD / "ct_slice.dcm", FIXTURES / "no-such-file.png"]
    mixed = good[:3] + bad[:1] + good[3:6] + bad[1:] + good[6:]
    return [str(p) for p in mixed]


def test_threads_change_nothing_but_the_speed(sources):
    one = pipeline.prepare_many(sources, threads=1)
    four = pipeline.prepare_many(sources, threads=4)
    assert len(one) == len(four) == len(sources)
    for a, b, source in zip(one, four, sources, strict=True):
        assert type(a) is type(b), source
        if isinstance(a, pipeline.PreparedImage):
            assert np.array_equal(a.pixels, b.pixels)
            assert (a.width, a.height, a.format) == (b.width, b.height, b.format)
            assert a.attributes == b.attributes
            assert np.array_equal(a.pixels, pipeline.prepare(source).pixels)


def test_failures_come_back_in_their_place(sources):
    outcomes = pipeline.prepare_many(sources, threads=3)
    by_name = {source.rsplit("/", 1)[-1]: outcome for source, outcome in zip(sources, outcomes, strict=True)}
    assert isinstance(by_name["truncated.jpeg"], DecodeFailed)
    assert isinstance(by_name["ct_slice.dcm"], InputRejected)
    assert isinstance(by_name["no-such-file.png"], FileNotFoundError)
    assert sum(isinstance(o, pipeline.PreparedImage) for o in outcomes) == len(sources) - 3


def test_timings_add_up_per_stage(sources):
    timings: dict[str, float] = {}
    pipeline.prepare_many(sources, threads=2, timings=timings)
    assert set(timings) >= {"decode", "preprocess"}
    assert all(v > 0 for v in timings.values())


def test_a_chunk_with_rejected_images_scores_the_rest_as_if_alone(
    served_explainer, served_gate, served_population_check
):
    """The gate runs beside the model, which then scores every image: the rejected ones' answers must be dropped,
    in their place, and the accepted ones must read as if scored on their own."""
    explainer, gate, check = served_explainer, served_gate, served_population_check
    films = [pipeline.prepare(str(p)) for p in sorted(XRAY.rglob("*.jpeg"))[:4]]
    photo = pipeline.prepare(str(BAD / "photograph.jpeg"))
    blank = pipeline.PreparedImage(np.full((224, 224), 128, np.uint8), 0.0, 224, 224, "png")
    chunk = [photo, films[0], films[1], blank, films[2], films[3]]

    outcomes = pipeline.score(chunk, explainer, gate, check)

    assert [type(o).__name__ for o in outcomes] == ["Rejected", "Scored", "Scored", "Rejected", "Scored", "Scored"]
    assert "colour photograph" in outcomes[0].reason
    for film, outcome in zip(films, [outcomes[1], outcomes[2], outcomes[4], outcomes[5]], strict=True):
        (alone,) = pipeline.score([film], explainer, gate, check)
        assert outcome.prediction.probability == pytest.approx(alone.prediction.probability, abs=1e-5)
        assert outcome.adult_probability == pytest.approx(alone.adult_probability, abs=1e-5)


def test_the_colour_cue_reads_a_file_again_only_when_it_is_stored_in_colour(monkeypatch):
    """Grey files (most radiographs) get 0 without a second decode; colour files still get their measure."""
    from ml.serving import gate

    looked_at = []

    def colourfulness_of_file(source):
        looked_at.append(str(source).rsplit("/", 1)[-1])
        return gate.colourfulness_of_file(source)

    monkeypatch.setattr(pipeline, "colourfulness_of_file", colourfulness_of_file)
    grey = [pipeline.prepare(str(BAD / name)) for name in ("plain.jpeg", "plain.png", "sixteen_bit.png")]
    photo = pipeline.prepare(str(BAD / "photograph.jpeg"))
    dicom = pipeline.prepare(str(BAD / "mono2.dcm"))

    assert looked_at == ["photograph.jpeg"]
    assert [image.colourfulness for image in grey] == [0.0, 0.0, 0.0]
    assert photo.colourfulness == gate.colourfulness_of_file(BAD / "photograph.jpeg") > 10
    assert np.isnan(dicom.colourfulness)
