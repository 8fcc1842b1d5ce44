"""Rows for tests that need studies in a given state without running the model."""

from __future__ import annotations

import io
import itertools

from django.utils import timezone
from PIL import Image

from screening.intake.submission import storage_path
from screening.models import Batch, Result, Study

_counter = itertools.count(1)


def batch_for(user, **fields) -> Batch:
    return Batch.objects.create(submitted_by=user, source=Batch.Source.API, **fields)


def scored_study(batch: Batch, probability: float, *, threshold: float = 0.5, media_root=None, **fields) -> Study:
    """A DONE study with a result; with ``media_root`` it also gets a real PNG on disk."""
    n = next(_counter)
    sha = f"{n:064x}"
    label = "PNEUMONIA" if probability >= threshold else "NORMAL"
    study = Study.objects.create(
        batch=batch,
        file=storage_path(sha, "png"),
        original_name=f"study-{n}.png",
        sha256=sha,
        size_bytes=100,
        format="png",
        status=Study.Status.DONE,
        score=probability,
        model_label=label,
        finished_at=timezone.now(),
        **fields,
    )
    result = Result.objects.create(
        study=study, model_version="v-test", probability=probability, label=label, threshold=threshold, inference_ms=2.0
    )
    if media_root is not None:
        for name, mode, size in ((study.file.name, "L", (64, 48)), (f"heatmaps/v-test/{sha}.png", "RGBA", (32, 24))):
            path = media_root / name
            path.parent.mkdir(parents=True, exist_ok=True)
            buffer = io.BytesIO()
            Image.new(mode, size).save(buffer, format="PNG")
            path.write_bytes(buffer.getvalue())
        Result.objects.filter(pk=result.pk).update(heatmap=f"heatmaps/v-test/{sha}.png")
    return study


def unscored_study(batch: Batch, status: str, message: str = "Could not be read.") -> Study:
    n = next(_counter)
    return Study.objects.create(
        batch=batch,
        file=storage_path(f"{n:064x}", "jpeg"),
        original_name=f"bad-{n}.jpeg",
        sha256=f"{n:064x}",
        size_bytes=10,
        format="jpeg",
        status=status,
        status_message=message,
        finished_at=timezone.now(),
    )


def bulk_scored_studies(batch: Batch, n: int) -> list[Study]:
    """``n`` DONE studies with a result each, in two queries (for query-count tests)."""
    now = timezone.now()
    first = next(_counter) * 100_000
    studies = Study.objects.bulk_create(
        Study(
            batch=batch,
            file=f"studies/x/{first + i}.png",
            original_name=f"{first + i}.png",
            sha256=f"{first + i:064x}",
            size_bytes=1,
            format="png",
            status=Study.Status.DONE,
            score=(i % 997) / 997,
            model_label="NORMAL",
            finished_at=now,
        )
        for i in range(n)
    )
    Result.objects.bulk_create(
        Result(study=s, model_version="v-test", probability=s.score, label="NORMAL", threshold=0.5, inference_ms=1.0)
        for s in studies
    )
    return studies


def finding(**changes):
    """What the model said about one instance, for the DICOM and FHIR builders (``screening.dicom.objects``)."""
    from screening.dicom.objects import Finding

    values = dict(
        label="PNEUMONIA",
        probability=0.873,
        threshold=0.42,
        shown_probability=0.61,
        viral_probability=0.3,
        model_name="pneumonia-screening",
        model_version="v4",
        population="outside",
        population_reason="Declared age 45 years is outside the validated 1-5 years.",
        salient_box=[0.25, 0.5, 0.75, 1.0],
        evidence_outside_lungs=0.34,
    )
    return Finding(**{**values, **changes})
