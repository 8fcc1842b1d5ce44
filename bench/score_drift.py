"""Did a change to the serving path move any score? Dump this tree's scores, then compare two dumps.

    .venv/bin/python -m bench.score_drift dump scores-new.json      # in this tree
    git worktree add /tmp/old <rev> && cp bench/score_drift.py /tmp/old/bench/ && cd /tmp/old && \
        /work/main/.venv/bin/python -m bench.score_drift --data /work/shared/data dump /tmp/scores-old.json
    .venv/bin/python -m bench.score_drift compare /tmp/scores-old.json scores-new.json
    .venv/bin/python -m bench.score_drift draft                     # draft vs full JPEG decode, detector-sized
    .venv/bin/python -m bench.score_drift lookup                    # looked-up vs per-pixel DICOM / 16-bit PNG grey

``dump`` scores the 1,870 ``chest_xray_hires`` files and the 12 originals
(../shared/data) through the worker's own path (``pipeline.prepare_many`` when
the tree has it, the gate, the model) and writes {file: [probability, label]}.
``compare`` prints the largest |ΔP| overall, on the originals and on the hires
files, and how many labels agree. ``draft`` prints, per original as it is and
enlarged to a short side of at least 1,700 px (as CR/DX exports are), how far
reduced-size decoding moves the model's input and probability from a full
decode. ``lookup`` writes each original, enlarged to detector size, as 12-bit
DICOM in five display set-ups (window; rescale and window; no window; VOI LUT;
MONOCHROME1) and as a 16-bit PNG, and prints whether the grey conversion looked
up per value (``decode._per_value``) equals the one computed per pixel (the
model's input cannot move if it does) and what decoding plus squashing costs
each way. Not a test: prints figures, asserts nothing.
"""

from __future__ import annotations

import argparse
import io
import json
import os
from pathlib import Path

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "webapp.settings_test")

import django  # noqa: E402

django.setup()

import numpy as np  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_DATA = ROOT.parent / "shared" / "data"


def dump(target: str, data: Path) -> None:
    from ml.serving import pipeline
    from worker.loaded_models import get_gate, get_population_check, get_screener

    explainer, gate, check = get_screener(), get_gate(), get_population_check()
    files = sorted((data / "chest_xray_hires").rglob("*.jpeg")) + sorted((data / "originals").glob("*.jpeg"))
    if not files:
        raise SystemExit(f"no chest_xray_hires or originals under {data}: pass --data")
    scores = {}
    for first in range(0, len(files), 16):
        chunk = [str(f) for f in files[first : first + 16]]
        if hasattr(pipeline, "prepare_many"):
            prepared = pipeline.prepare_many(chunk, threads=2)
        else:  # trees from before decoding on threads
            prepared = [pipeline.prepare(f) for f in chunk]
        ready = [(f, p) for f, p in zip(chunk, prepared, strict=False) if isinstance(p, pipeline.PreparedImage)]
        for (name, _), outcome in zip(
            ready, pipeline.score([p for _, p in ready], explainer, gate, check), strict=False
        ):
            scored = isinstance(outcome, pipeline.Scored)
            scores[str(Path(name).relative_to(data))] = (
                [float(outcome.prediction.probability), outcome.prediction.label] if scored else [None, "REJECTED"]
            )
    Path(target).write_text(json.dumps(scores))
    print(f"{len(scores)} files scored into {target}")


def compare(old: str, new: str) -> None:
    a, b = json.loads(Path(old).read_text()), json.loads(Path(new).read_text())
    shared = sorted(set(a) & set(b))
    drift = {k: abs(a[k][0] - b[k][0]) for k in shared if a[k][0] is not None and b[k][0] is not None}
    for name, keys in (
        ("all", list(drift)),
        ("originals", [k for k in drift if k.startswith("originals")]),
        ("hires", [k for k in drift if k.startswith("chest_xray_hires")]),
    ):
        print(f"{name:10} {len(keys):5d} files   max |dP| {max((drift[k] for k in keys), default=0.0):.4f}")
    agree = sum(a[k][1] == b[k][1] for k in shared)
    print(f"labels agree: {agree} / {len(shared)}   (files only in one dump: {len(set(a) ^ set(b))})")


def draft(data: Path) -> None:
    """Reduced-size against full decoding, on each original as it is and enlarged to detector size."""
    from ml.serving import decode
    from worker.loaded_models import get_screener

    screener = get_screener().screener
    print(f"DRAFT_OVERSAMPLE {decode.DRAFT_OVERSAMPLE}")
    worst = {"as is": 0.0, "enlarged": 0.0}
    for path, grey, large in _detector_sized(data):
        buffer = io.BytesIO()
        large.save(buffer, format="JPEG", quality=95)
        for kind, data_bytes, size in (
            ("as is", path.read_bytes(), grey.size),
            ("enlarged", buffer.getvalue(), large.size),
        ):
            moved, line = _draft_shift(screener, decode, data_bytes)
            worst[kind] = max(worst[kind], moved)
            print(f"{path.name[:40]:40} {kind:8} {size[0]}x{size[1]}  {line}")
    print("largest |dP|: " + ", ".join(f"{kind} {value:.4f}" for kind, value in worst.items()))


def _draft_shift(screener, decode, data: bytes) -> tuple[float, str]:
    from ml.serving.preprocess import squash_to_input

    full = squash_to_input(decode.decode(data).pixels)
    reduced = squash_to_input(decode.decode(data, target_size=224).pixels)
    p_full, p_reduced = screener.predict(np.stack([full, reduced]))
    moved = abs(p_full.probability - p_reduced.probability)
    same = "same label" if p_full.label == p_reduced.label else "LABEL CHANGED"
    shift = np.abs(full.astype(int) - reduced).mean()
    return moved, f"input {shift:.2f} grey levels  |dP| {moved:.4f}  {same}"


def _detector_sized(data: Path):
    """Each original as grey, enlarged by a whole factor to a short side of at least 1,700 px (as CR/DX exports are)."""
    from PIL import Image

    for path in sorted((data / "originals").glob("*.jpeg")):
        with Image.open(path) as image:
            grey = image.convert("L")
        factor = -(-1700 // min(grey.size))
        yield path, grey, grey.resize((grey.width * factor, grey.height * factor), Image.Resampling.LANCZOS)


def _lookup_kinds(pixels: np.ndarray) -> dict:
    """One 12-bit radiograph as DICOM in each display set-up ``lookup`` measures, and as a 16-bit PNG."""
    import importlib.util

    from PIL import Image
    from pydicom.dataset import Dataset

    spec = importlib.util.spec_from_file_location("make_bad_corpus", ROOT / "tests/fixtures/make_bad_corpus.py")
    corpus = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(corpus)
    twelve = pixels.astype(np.uint16) * 16 + 8
    lut = Dataset()
    lut.LUTDescriptor = [4096, 0, 8]
    lut.add_new("LUTData", "OW", (np.arange(4096, dtype=np.uint16) // 16).tobytes())
    voi = corpus.dicom_dataset(twelve, name="voi", bits_stored=12)
    voi.VOILUTSequence = [lut]
    datasets = {
        "window": corpus.dicom_dataset(twelve, name="w", bits_stored=12, window=(2048, 3600)),
        "rescale + window": corpus.dicom_dataset(
            twelve, name="rw", bits_stored=12, window=(700, 1500), rescale=(0.5, -100)
        ),
        "no window": corpus.dicom_dataset(twelve, name="n", bits_stored=12),
        "VOI LUT": voi,
        "MONOCHROME1": corpus.dicom_dataset(
            4095 - twelve, name="m1", bits_stored=12, window=(2048, 4096), photometric="MONOCHROME1"
        ),
    }
    kinds = {f"DICOM {name}": corpus.dicom_bytes(ds) for name, ds in datasets.items()}
    png = io.BytesIO()
    Image.fromarray(twelve).save(png, format="PNG")  # mode I;16
    return {**kinds, "PNG 16-bit": png.getvalue()}


def lookup(data: Path, repeats: int = 5) -> None:
    """Grey looked up per value against computed per pixel, on detector-sized DICOM and 16-bit PNG."""
    import time
    from unittest import mock

    from ml.serving import decode
    from ml.serving.preprocess import squash_to_input

    ways = {
        "looked up": mock.patch.object(decode, "_per_value", decode._per_value),
        "per pixel": mock.patch.object(decode, "_per_value", lambda values, transform: transform(values)),
    }
    rows: dict[str, dict[str, list[float]]] = {}
    for path, _, large in _detector_sized(data):
        for kind, file_bytes in _lookup_kinds(np.asarray(large)).items():
            row = rows.setdefault(kind, {"looked up": [], "per pixel": [], "equal": []})
            outputs = {}
            for _ in range(repeats):  # in turn, so that drift of the machine's speed hits both alike
                for way, patch in ways.items():
                    with patch:
                        started = time.perf_counter()
                        outputs[way] = squash_to_input(decode.decode(file_bytes, target_size=224).pixels)
                        row[way].append((time.perf_counter() - started) * 1000)
            row["equal"].append(float(np.array_equal(outputs["looked up"], outputs["per pixel"])))
        print(f"{path.name[:40]:40} {large.width}x{large.height}", flush=True)
    print(f"decode + squash of the 12 originals, 12-bit, ms per file (median / fastest of {repeats} each)")
    for kind, row in rows.items():
        print(
            f"  {kind:22} per pixel {np.median(row['per pixel']):6.1f} / {min(row['per pixel']):6.1f}   "
            f"looked up {np.median(row['looked up']):6.1f} / {min(row['looked up']):6.1f}   "
            f"model input identical in {int(sum(row['equal']))}/{len(row['equal'])}"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA, help="the shared data folder")
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("dump").add_argument("target")
    both = commands.add_parser("compare")
    both.add_argument("old")
    both.add_argument("new")
    commands.add_parser("draft")
    commands.add_parser("lookup")
    args = parser.parse_args()
    if args.command == "dump":
        dump(args.target, args.data)
    elif args.command == "compare":
        compare(args.old, args.new)
    elif args.command == "draft":
        draft(args.data)
    else:
        lookup(args.data)


if __name__ == "__main__":
    main()
