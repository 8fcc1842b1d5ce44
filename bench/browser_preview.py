"""How closely, and how fast, the submit page's in-browser preview reproduces the server (issue 16).

    .venv/bin/python -m bench.browser_preview                      # the test fixtures
    .venv/bin/python -m bench.browser_preview ../shared/data/originals ../shared/data/chest_xray_hires/train --limit 80

Runs ``webapp/static/js/preview-engine.js`` with the committed export and the
vendored tf.js in headless Chromium (pages served from ``webapp/static``
through Playwright's routing: no web server, no network) and the worker's own
path (``ml.serving.pipeline``, gate, population check) here, on the same files.
Prints per file: how far the browser's 224x224 input is from the server's
(JPEGs the server decodes in draft mode differ), |ΔP|, the differences of the
gate's margins and of the population logit (what the preview's refusal bands
in ``MARGIN`` must cover), whether both would show a score, and the
browser's time per file. Not a test: prints figures, asserts nothing.
"""

from __future__ import annotations

import argparse
import json
import mimetypes
import os
import statistics
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
STATIC = ROOT / "webapp" / "static"
FIXTURES = ROOT / "tests" / "fixtures"
CHROMIUM = os.environ.get("CHROMIUM", "/usr/bin/chromium")
ORIGIN = "http://preview.bench"
PAGE = """<!doctype html><html lang="en"><body><input type="file" id="files" multiple>
<script src="/static/vendor/tfjs/tf-core.es2017.min.js"></script>
<script src="/static/vendor/tfjs/tf-backend-cpu.es2017.min.js"></script>
<script src="/static/js/preview-engine.js"></script></body></html>"""
SCORE = """async (limits) => {
  const out = [];
  for (const file of document.getElementById("files").files) out.push(await window.engine.scoreFile(file, limits));
  return out;
}"""


def default_files() -> list[Path]:
    bad = ["plain.png", "plain.jpeg", "rgba.png", "palette.png", "grey_alpha.png", "cmyk.jpeg", "exif_rotated.jpeg"]
    return (
        sorted((FIXTURES / "xray").rglob("*.jpeg"))
        + sorted((FIXTURES / "originals").glob("*.jpeg"))
        + sorted((FIXTURES / "adult").glob("*.jpeg"))
        + [FIXTURES / "bad" / name for name in bad]
        + [FIXTURES / "bad" / "photograph.jpeg"]
    )


def collect(args: list[str], limit: int | None) -> list[Path]:
    if not args:
        return default_files()
    files: list[Path] = []
    for arg in args:
        path = Path(arg)
        found = (
            sorted(p for p in path.rglob("*") if p.suffix.lower() in (".jpeg", ".jpg", ".png"))
            if path.is_dir()
            else [path]
        )
        files += found[:limit] if limit else found
    return files


def browser_results(files: list[Path], export_id: str) -> tuple[list[dict], float]:
    from playwright.sync_api import sync_playwright

    def serve(route):
        path = route.request.url.removeprefix(ORIGIN).split("?")[0]
        if path == "/":
            return route.fulfill(body=PAGE, content_type="text/html")
        target = (STATIC / path.removeprefix("/static/")).resolve()
        if STATIC not in target.parents or not target.is_file():
            return route.fulfill(status=404)
        return route.fulfill(body=target.read_bytes(), content_type=mimetypes.guess_type(target.name)[0] or "")

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, headless=True, args=["--no-sandbox"])
        page = browser.new_page()
        page.route(f"{ORIGIN}/**", serve)
        page.goto(f"{ORIGIN}/")
        page.evaluate(
            "async (id) => { window.engine = await PneumoPreviewEngine.load(window.tf, "
            "'/static/preview/model.json', '/static/preview/weights.bin', id); }",
            export_id,
        )
        limits = {"maxBytes": 64 * 1024 * 1024, "maxPixels": 50_000_000, "measure": True}
        page.set_input_files("#files", [str(files[0])])
        warm = page.evaluate(SCORE, limits)[0]["ms"]  # tf.js compiles nothing on the CPU backend, but allocates
        results = []
        for start in range(0, len(files), 16):
            page.set_input_files("#files", [str(p) for p in files[start : start + 16]])
            results += page.evaluate(SCORE, limits)
        browser.close()
    return results, warm


def server_results(files: list[Path]) -> list[dict]:
    from ml.serving import pipeline
    from ml.serving.decode import UnscorableInput
    from ml.serving.gate import ChestXrayGate
    from ml.serving.inference import Screener, current_model_dir
    from ml.serving.population_check import PopulationCheck

    screener, gate, check = Screener.load(current_model_dir()), ChestXrayGate.load(), PopulationCheck.load()
    out = []
    for path in files:
        try:
            prepared = pipeline.prepare(path)
        except UnscorableInput as exc:
            out.append({"refused": exc.status})
            continue
        images = prepared.pixels[None]
        scores = gate.scores(images, colourfulness=np.array([prepared.colourfulness]))
        (verdict,) = gate.verdicts(scores)
        (prediction,) = screener.predict(images)
        logit = float(check.logit(scores["features"])[0])
        out.append(
            {
                "pixels": prepared.pixels,
                "probability": prediction.probability,
                "densityMargin": float(scores["density_margin"][0]),
                "headMargin": float(scores["head_margin"][0]),
                "populationLogit": logit,
                "colourfulness": prepared.colourfulness,
                "shown": verdict.accepted and logit < check.threshold_logit,
            }
        )
    return out


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("paths", nargs="*", help="files or folders (default: the test fixtures)")
    parser.add_argument("--limit", type=int, help="at most this many files from each folder")
    parser.add_argument("--json", type=Path, help="also write the rows here")
    args = parser.parse_args(argv)
    files = collect(args.paths, args.limit)
    export_id = json.loads((STATIC / "preview" / "manifest.json").read_text())["export_id"]
    browser, warm = browser_results(files, export_id)
    server = server_results(files)
    rows = []
    print(
        f"{'file':44} {'draft':>5} {'px mean':>7} {'px max':>6} {'|dP|':>9} {'d dens':>7} {'d head':>7} {'d pop':>7} "
        "server/preview   ms"
    )
    for path, b, s in zip(files, browser, server, strict=True):
        row = {"file": str(path), "ms": round(b["ms"], 1), "server": "refused" if "refused" in s else "scored"}
        row["draft"] = b.get("draftScale", 1)
        if "refused" not in s and "pixels" in b:
            diff = np.abs(np.asarray(b["pixels"], np.int16) - s["pixels"].astype(np.int16).ravel())
            row.update(
                pixel_mean=float(diff.mean()),
                pixel_max=int(diff.max()),
                delta_p=abs(b["probability"] - s["probability"]),
                delta_density=abs(b["densityMargin"] - s["densityMargin"]),
                delta_head=abs(b["headMargin"] - s["headMargin"]),
                delta_population=abs(b["populationLogit"] - s["populationLogit"]),
                delta_colour=abs(b["colourfulness"] - s["colourfulness"]),
                server=("shown" if s["shown"] else "not shown"),
            )
        row["preview"] = f"no preview ({b['refused']})" if b.get("refused") else "shown"
        rows.append(row)
        if "delta_p" in row:
            print(
                f"{path.name[:44]:44} {row['draft']:5d} {row['pixel_mean']:7.3f} {row['pixel_max']:6d} "
                f"{row['delta_p']:9.2e} {row['delta_density']:7.4f} {row['delta_head']:7.4f} "
                f"{row['delta_population']:7.4f} "
                f"{row['server']}/{row['preview']} {row['ms']:6.0f}"
            )
        else:
            print(f"{path.name[:44]:44} {'':>55} {row['server']}/{row['preview']} {row['ms']:6.0f}")
    compared = [r for r in rows if "delta_p" in r]
    shown_both = [r for r in compared if r["preview"] == "shown"]
    wrong = [r for r in rows if r["preview"] == "shown" and r["server"] != "shown"]
    times = [r["ms"] for r in rows if r["preview"] == "shown"]
    if compared:
        print(
            f"\n{len(files)} files: largest |dP| {max(r['delta_p'] for r in compared):.2e} "
            f"over {len(compared)} the server decodes "
            f"({max((r['delta_p'] for r in shown_both), default=0):.2e} where the preview shows one); "
            f"largest pixel difference {max(r['pixel_max'] for r in compared)}; gate margins "
            f"{max(r['delta_density'] for r in compared):.4f} (density), {max(r['delta_head'] for r in compared):.4f} "
            f"(head); population logit {max(r['delta_population'] for r in compared):.4f}; colourfulness "
            f"{max(r['delta_colour'] for r in compared):.2f}; "
            f"previews the server would not show: {len(wrong)}"
        )
    if times:
        print(
            f"browser time per scored file: median {statistics.median(times):.0f} ms, "
            f"max {max(times):.0f} ms (first, cold: {warm:.0f} ms)"
        )
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
