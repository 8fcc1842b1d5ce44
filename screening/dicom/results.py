"""From a stored result to the DICOM objects (and their facts) that go back into the source study.

Built on demand, in memory: the structured report and the heatmap capture
carry the patient module of the source file, which the service never keeps
anywhere else, so they are never written to its storage. Sending and
downloading both come through here, so PACS and a downloading system get the
same objects (same UIDs) for the same result.
"""

from __future__ import annotations

from pathlib import Path

import pydicom

from ml.serving.decode import UnscorableInput, decode
from screening.dicom.objects import Finding, blend_overlay, heatmap_capture, structured_report
from screening.intake.previews import heatmap_file
from screening.models import Delivery, Result, Study

MODEL_NAME = "pneumonia-screening"


class SourceUnavailable(Exception):
    """The result cannot be expressed in DICOM: the study is not DICOM, or its original is gone."""


def finding(result: Result) -> Finding:
    return Finding(
        label=result.label,
        probability=result.probability,
        threshold=result.threshold,
        shown_probability=result.site_probability,
        viral_probability=result.viral_probability,
        model_name=MODEL_NAME,
        model_version=result.model_version,
        population=result.population,
        population_reason=result.population_reason,
        salient_box=result.salient_box,
        evidence_outside_lungs=result.evidence_outside_lungs,
    )


def _source_path(study: Study) -> Path:
    if study.format != Study.Format.DICOM:
        raise SourceUnavailable("The study was not a DICOM file, so there is no DICOM study to add results to.")
    if study.file_purged_at is not None or not study.file:
        raise SourceUnavailable("The original DICOM file was removed under the retention policy.")
    path = Path(study.file.path)
    if not path.exists():
        raise SourceUnavailable("The original DICOM file is missing from storage.")
    return path


def source_dataset(study: Study) -> pydicom.Dataset:
    return pydicom.dcmread(_source_path(study))


def report(result: Result) -> pydicom.Dataset:
    return structured_report(source_dataset(result.study), finding(result))


def heatmap(result: Result) -> pydicom.Dataset:
    path = _source_path(result.study)
    try:
        overlay_path = heatmap_file(result, result.study)
        if overlay_path is None:
            raise SourceUnavailable("The result has no heatmap.")
        gray = decode(path).pixels
        overlay = overlay_path.read_bytes()
    except (UnscorableInput, OSError) as exc:
        raise SourceUnavailable(f"The heatmap could not be rendered: {exc}") from exc
    return heatmap_capture(pydicom.dcmread(path), blend_overlay(gray, overlay), finding(result))


def build(result: Result, kind: str) -> pydicom.Dataset:
    return report(result) if kind == Delivery.Kind.REPORT else heatmap(result)
