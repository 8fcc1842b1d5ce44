"""From file bytes to scored, explained results for a chunk: the one path every caller runs.

The worker (``worker.scoring``), the benchmarks, evaluation and the tests
all go through these functions, so a figure measured anywhere is a figure of
the production path, and a fix lands everywhere at once. No Django here: the
caller decides what a study row, a file on disk or a log line becomes.

    prepared = prepare(path_or_bytes)                 # raises UnscorableInput (FAILED/REJECTED with a reason)
    many = prepare_many(paths, threads=2)             # the same, on every core; failures returned in place
    outcomes = score([prepared, ...], explainer, gate)  # one gate pass and one model pass for the chunk
    png = outcomes[0].overlay_png(prepared.width, prepared.height)   # for a Scored outcome

Optional ``timings`` dicts collect seconds per stage, for the benchmarks.
"""

from __future__ import annotations

import dataclasses
import os
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import numpy as np

from ml.serving import heatmap as heatmaps
from ml.serving.decode import DEFAULT_MAX_BYTES, DEFAULT_MAX_PIXELS, decode
from ml.serving.gate import GREY_MODES, ChestXrayGate, colourfulness_of_file
from ml.serving.heatmap import ExplainingScreener
from ml.serving.inference import Prediction
from ml.serving.population_check import PopulationCheck
from ml.serving.preprocess import INPUT_SIZE, squash_to_input

PNEUMONIA = "PNEUMONIA"
NORMAL = "NORMAL"


@dataclass(frozen=True)
class PreparedImage:
    """A decoded file, ready for the gate and the model."""

    pixels: np.ndarray  # (input_size, input_size) uint8, from squash_to_input
    colourfulness: float  # of the original before grey conversion; NaN = unknown (DICOM)
    width: int  # of the original, as displayed
    height: int
    format: str  # "jpeg", "png" or "dicom"
    attributes: dict[str, str] = field(default_factory=dict)  # DICOM header values the service records


@dataclass(frozen=True)
class Scored:
    """The model's answer for one accepted image, with the map that explains it."""

    prediction: Prediction
    heatmap: np.ndarray  # (h, w) float32 in [0, 1] on the model's squashed grid
    salient_box: tuple[float, float, float, float] | None  # image fractions; only for a PNEUMONIA label
    # The image-based population check (``ml.serving.population``), when one ran.
    adult_probability: float | None = None
    adult_threshold: float | None = None
    population_check_version: str = ""
    # Share of the raw map outside the lung fields (``heatmap.LungField``); None for cards without one.
    outside_lungs: float | None = None

    def overlay_png(self, width: int, height: int) -> bytes:
        """The map as a transparent PNG with the original's aspect ratio, box drawn where there is one."""
        return heatmaps.overlay_png(self.heatmap, width, height, self.salient_box)


@dataclass(frozen=True)
class Rejected:
    """The gate's refusal: not a frontal chest X-ray of the kind the model was validated on."""

    reason: str
    gate_score: float


def _add(timings: dict[str, float] | None, stage: str, since: float) -> float:
    now = time.perf_counter()
    if timings is not None:
        timings[stage] = timings.get(stage, 0.0) + now - since
    return now


def prepare(
    source: bytes | str | os.PathLike,
    *,
    input_size: int = INPUT_SIZE,
    max_bytes: int = DEFAULT_MAX_BYTES,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    timings: dict[str, float] | None = None,
) -> PreparedImage:
    """Decode ``source`` (a path or the file's bytes) and squash it to the model's input.

    Raises ``UnscorableInput`` (its ``status`` and ``reason`` are for the user)
    and ``FileNotFoundError``; anything else is a bug in a library or here.
    """
    started = time.perf_counter()
    decoded = decode(source, target_size=input_size, max_bytes=max_bytes, max_pixels=max_pixels)
    started = _add(timings, "decode", started)
    pixels = squash_to_input(decoded.pixels, input_size)
    started = _add(timings, "preprocess", started)
    # The decoder hands over luma only; the gate also wants to know whether the
    # original was in colour (photos, screenshots). A file stored grey has none
    # (most radiographs: no second look at the file); DICOM carries no such cue.
    if decoded.format == "dicom":
        colour = float("nan")
    elif decoded.source_mode in GREY_MODES:
        colour = 0.0
    else:
        colour = colourfulness_of_file(source)
    _add(timings, "colour cue", started)
    return PreparedImage(pixels, colour, decoded.width, decoded.height, decoded.format, dict(decoded.attributes))


def prepare_many(
    sources: Sequence[bytes | str | os.PathLike],
    *,
    threads: int = 1,
    input_size: int = INPUT_SIZE,
    max_bytes: int = DEFAULT_MAX_BYTES,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    timings: dict[str, float] | None = None,
) -> list[PreparedImage | Exception]:
    """:func:`prepare` for each source, in order, in ``threads`` threads; a failure is returned in its place.

    Decoding and resizing run in C with the GIL released (libjpeg, zlib,
    Pillow's resampling, the DICOM pixel plugins), so threads use every core
    of a worker process for the part of a chunk that is not the model; the
    model then has the cores to itself. ``timings`` adds each thread's seconds
    (CPU time spent per stage, not wall time).
    """

    def one(source) -> tuple[PreparedImage | Exception, dict[str, float]]:
        spent: dict[str, float] = {}
        try:
            return prepare(
                source, input_size=input_size, max_bytes=max_bytes, max_pixels=max_pixels, timings=spent
            ), spent
        except Exception as exc:  # noqa: BLE001 - handed back for the caller to judge, as prepare() would raise it
            return exc, spent

    if threads <= 1 or len(sources) <= 1:
        done = [one(source) for source in sources]
    else:
        with ThreadPoolExecutor(max_workers=min(threads, len(sources)), thread_name_prefix="prepare") as pool:
            done = list(pool.map(one, sources))
    if timings is not None:
        for _, spent in done:
            for stage, seconds in spent.items():
                timings[stage] = timings.get(stage, 0.0) + seconds
    return [outcome for outcome, _ in done]


_gate_thread: tuple[int, ThreadPoolExecutor] | None = None


def _gate_pool() -> ThreadPoolExecutor:
    """The process's thread for the gate's pass; made anew in a forked child (threads do not survive a fork)."""
    global _gate_thread
    if _gate_thread is None or _gate_thread[0] != os.getpid():
        _gate_thread = (os.getpid(), ThreadPoolExecutor(max_workers=1, thread_name_prefix="gate"))
    return _gate_thread[1]


def score(
    prepared: Sequence[PreparedImage],
    explainer: ExplainingScreener,
    gate: ChestXrayGate | None,
    population_check: PopulationCheck | None = None,
    *,
    threshold: float | None = None,
    timings: dict[str, float] | None = None,
) -> list[Scored | Rejected]:
    """One outcome per image, in order: the gate's verdict, and the model's answer for what it accepted.

    ``threshold`` replaces the model card's operating threshold (a site's
    adopted one): it sets each label and so whether a salient box is drawn.
    The population check reads the features of the gate's own pass, so it
    costs a dot product per image; without a gate it does not run.

    The gate and the model run side by side, the gate on a second thread:
    neither network keeps two cores busy at a chunk's batch size, and
    TensorFlow releases the GIL while it computes. The model therefore also
    scores the images the gate turns away; their answers are dropped (a
    rejected image costs the model a few milliseconds, and rejections are rare).
    """
    if not prepared:
        return []
    started = time.perf_counter()
    images = np.stack([p.pixels for p in prepared])
    outcomes: list[Scored | Rejected | None] = [None] * len(prepared)
    adult = np.full(len(prepared), np.nan)
    gating = None
    if gate is not None:
        colours = np.array([p.colourfulness for p in prepared], dtype=np.float64)
        gating = _gate_pool().submit(gate.scores, images, colourfulness=colours)
    explained = explainer.explain(images)
    if gate is not None and gating is not None:
        scores = gating.result()
        for i, verdict in enumerate(gate.verdicts(scores)):
            if verdict.reason is not None:  # exactly the refused ones (``GateVerdict``)
                outcomes[i] = Rejected(verdict.reason, verdict.score)
        if population_check is not None:
            adult = population_check.adult_probability(scores["features"])
    for i, item in enumerate(explained):
        if outcomes[i] is not None:
            continue  # rejected by the gate
        prediction = item.prediction
        if threshold is not None:
            label = PNEUMONIA if prediction.probability >= threshold else NORMAL
            prediction = dataclasses.replace(prediction, label=label)
        box = heatmaps.salient_box(item.heatmap) if prediction.label == PNEUMONIA else None
        outcomes[i] = Scored(
            prediction,
            item.heatmap,
            box,
            *_population_fields(adult[i], population_check),
            outside_lungs=item.outside_lungs,
        )
    # One stage: the gate's network runs beside the model's.
    _add(timings, "gate + model + heatmap", started)
    return outcomes  # type: ignore[return-value]  # every slot is filled above


def _population_fields(adult: float, check: PopulationCheck | None) -> tuple[float | None, float | None, str]:
    if check is None or np.isnan(adult):
        return None, None, ""
    return float(adult), check.threshold, check.version
