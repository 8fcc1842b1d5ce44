"""Scoring a chunk of studies: claim, decode, one forward pass, write results.

Run by the worker's task. Each step is safe to repeat: the claim is a
conditional update (a study another run already took is skipped), and a
result is unique per study and model version. One unreadable file fails only
its own study; the rest of the chunk is still scored.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
from celery.exceptions import SoftTimeLimitExceeded
from django.conf import settings
from django.db import InterfaceError, OperationalError, connection, transaction
from django.db.models import F, Q
from django.utils import timezone

from ml.serving import pipeline, population
from ml.serving.calibration import shift_prevalence
from ml.serving.decode import UnscorableInput
from ml.serving.fingerprint import fingerprint
from ml.serving.gate import ChestXrayGate
from ml.serving.heatmap import ExplainingScreener
from ml.serving.population_check import PopulationCheck
from screening import liveness
from screening.dicom import outbox
from screening.models import DICOM_COLUMNS, Batch, Result, SiteSetting, Study
from screening.population import validated_range
from screening.queue import release_unfinished
from screening.selectors import current_site_setting
from worker import loaded_models

log = logging.getLogger(__name__)

# Set per study when a chunk is written; the status columns, the same for the
# whole chunk, go in one plain UPDATE. The DICOM columns are written only for
# chunks that have any: bulk_update's CASE expressions cost Python time per
# field and row (76 ms a chunk of 16 with every column, a fifth of the chunk).
_PER_STUDY_FIELDS = ["score", "model_label", "image_width", "image_height", "population", "population_reason"]
_INTERNAL_ERROR = (
    "The file could not be processed because of an internal error; an administrator has been notified in the logs."
)


@dataclass
class ChunkSummary:
    claimed: list[int] = field(default_factory=list)
    done: int = 0
    failed: int = 0
    rejected: int = 0


def claim(study_ids: Sequence[int], claimant: str = "", reclaim_from: Sequence[str] = ()) -> list[Study]:
    """Mark the still-waiting studies among ``study_ids`` RUNNING for ``claimant`` and return them.

    Row locks make two workers that got the same ids take disjoint sets: the
    second waits for the first to commit, then no longer sees the rows as
    waiting. (Skipping locked rows instead would also skip a study whose row
    is briefly locked by an unrelated update, and leave it waiting for the
    sweep.) On SQLite, whose writers are serialised, the conditional update
    alone does it. A process also takes back studies it claimed itself and
    could not hand back (a retry after the database went away mid-chunk), and
    those that the processes in ``reclaim_from`` claimed for earlier attempts
    of the same chunk: the retry may run in another pool process. And it takes
    studies whose holder was a process of this host that no longer exists (a
    killed pool process whose message came back): the kernel says so at once,
    where the lease would make them wait for the sweep.
    """
    ids = list(study_ids)
    waiting = Q(status__in=[Study.Status.RECEIVED, Study.Status.QUEUED])
    holders = [name for name in (claimant, *reclaim_from) if name]
    if holders:
        waiting |= Q(status=Study.Status.RUNNING, claimed_by__in=holders)
    with transaction.atomic():
        rows = list(Study.objects.select_for_update().filter(waiting, pk__in=ids).values_list("pk", flat=True))
        if len(rows) < len(set(ids)):  # some are held: by a process that is gone? (not on the usual path)
            held = Study.objects.filter(pk__in=ids, status=Study.Status.RUNNING).exclude(claimed_by="")
            dead = liveness.gone_here(set(held.values_list("claimed_by", flat=True)))
            if dead:  # not a study that already killed its process too often: the sweep fails that one
                waiting |= Q(
                    status=Study.Status.RUNNING, claimed_by__in=dead, attempts__lt=settings.SCREENING_MAX_ATTEMPTS
                )
                rows = list(Study.objects.select_for_update().filter(waiting, pk__in=ids).values_list("pk", flat=True))
        if not rows:
            return []
        Study.objects.filter(waiting, pk__in=rows).update(
            status=Study.Status.RUNNING, started_at=timezone.now(), attempts=F("attempts") + 1, claimed_by=claimant
        )
    return list(Study.objects.filter(pk__in=rows, status=Study.Status.RUNNING).select_related("batch").order_by("pk"))


def _record_gate_rejection(study: Study, reason: str) -> None:
    Study.objects.filter(pk=study.pk, status=Study.Status.RUNNING).update(
        status=Study.Status.REJECTED,
        status_message=reason,
        finished_at=timezone.now(),
        image_width=study.image_width,
        image_height=study.image_height,
    )


def _finish_unscored(study: Study, status: str, message: str) -> None:
    Study.objects.filter(pk=study.pk, status=Study.Status.RUNNING).update(
        status=status, status_message=message, finished_at=timezone.now()
    )


def _record_image_facts(study: Study, prepared: pipeline.PreparedImage) -> None:
    study.image_width = prepared.width
    study.image_height = prepared.height
    study.record_dicom_header(prepared.attributes)


def _prepare_all(studies: list[Study], input_size: int) -> list[pipeline.PreparedImage | None]:
    """Each study's file ready for the model (decoded on every core), or None after finishing it FAILED/REJECTED."""
    outcomes = pipeline.prepare_many(
        [study.file.path for study in studies],
        threads=loaded_models.cpu_threads(),
        input_size=input_size,
        max_bytes=settings.SCREENING_MAX_FILE_BYTES,
        max_pixels=settings.SCREENING_MAX_IMAGE_PIXELS,
    )
    return [_accepted(study, outcome) for study, outcome in zip(studies, outcomes, strict=True)]


def _accepted(study: Study, outcome: pipeline.PreparedImage | Exception) -> pipeline.PreparedImage | None:
    """The prepared image, its facts noted on the study; or None after finishing the study FAILED/REJECTED."""
    if isinstance(outcome, pipeline.PreparedImage):
        _record_image_facts(study, outcome)
        return outcome
    if isinstance(outcome, FileNotFoundError):
        _finish_unscored(study, Study.Status.FAILED, "The stored file is missing; please submit it again.")
    elif isinstance(outcome, UnscorableInput):
        _finish_unscored(study, outcome.status, outcome.reason)
    else:
        log.error("decoding study %s failed unexpectedly", study.pk, exc_info=outcome)
        _finish_unscored(study, Study.Status.FAILED, _INTERNAL_ERROR)
    return None


def score_chunk(
    study_ids: Sequence[int],
    explainer: ExplainingScreener,
    gate: ChestXrayGate | None = None,
    population_check: PopulationCheck | None = None,
    claimant: str = "",
    reclaim_from: Sequence[str] = (),
) -> ChunkSummary:
    """Score whichever of ``study_ids`` are still waiting; every claimed study ends finished or back in the queue.

    ``claimant`` names the worker process (``screening.liveness.process_name``) on its claims;
    ``reclaim_from`` the processes that ran earlier attempts of this chunk (``claim``).
    """
    studies = claim(study_ids, claimant, reclaim_from)
    summary = ChunkSummary(claimed=[s.pk for s in studies])
    if not studies:
        return summary
    try:
        _score_claimed(studies, explainer, gate, population_check)
    except SoftTimeLimitExceeded:
        release_unfinished(summary.claimed, "Scoring took longer than the time limit, several times over.")
        raise
    except (OperationalError, InterfaceError):
        # The database went away: hand the studies back if we still can
        # (else the sweep will) and let the task retry with backoff.
        try:
            release_unfinished(summary.claimed, "The database was unavailable while scoring, several times over.")
        except (OperationalError, InterfaceError):
            log.warning("could not release %d claimed studies; the sweep will re-queue them", len(studies))
        raise
    except Exception:
        log.exception("scoring a chunk of %d studies failed unexpectedly", len(studies))
        Study.objects.filter(pk__in=summary.claimed, status=Study.Status.RUNNING).update(
            status=Study.Status.FAILED, status_message=_INTERNAL_ERROR, finished_at=timezone.now()
        )

    statuses = list(Study.objects.filter(pk__in=summary.claimed).values_list("status", flat=True))
    summary.done = statuses.count(Study.Status.DONE)
    summary.failed = statuses.count(Study.Status.FAILED)
    summary.rejected = statuses.count(Study.Status.REJECTED)
    return summary


def _score_claimed(
    studies: list[Study],
    explainer: ExplainingScreener,
    gate: ChestXrayGate | None,
    population_check: PopulationCheck | None,
) -> None:
    ready: list[Study] = []
    prepared: list[pipeline.PreparedImage] = []
    for study, image in zip(studies, _prepare_all(studies, explainer.input_size), strict=True):
        if image is not None:
            ready.append(study)
            prepared.append(image)
    setting = current_site_setting(explainer.version)
    threshold = None if setting is None else setting.threshold
    timings: dict[str, float] = {}
    outcomes = pipeline.score(prepared, explainer, gate, population_check, threshold=threshold, timings=timings)
    ages = validated_range(explainer.card)
    scored: list[tuple[Study, pipeline.Scored, population.Verdict]] = []
    for study, image, outcome in zip(ready, prepared, outcomes, strict=True):
        if isinstance(outcome, pipeline.Rejected):
            _record_gate_rejection(study, outcome.reason)
        else:
            if study.batch.kind == Batch.Kind.VALIDATION:
                # Only validation cases are compared with the training images (1 ms of CPU a film).
                study.fingerprint = fingerprint(image.pixels)
            scored.append((study, outcome, _population_verdict(study, image, outcome, ages)))
    if scored:
        per_study_ms = timings.get("gate + model + heatmap", 0.0) * 1000 / len(scored)
        _write_results(scored, explainer, setting, per_study_ms)


def _population_verdict(
    study: Study, image: pipeline.PreparedImage, outcome: pipeline.Scored, ages: population.AgeRange
) -> population.Verdict:
    return population.decide(
        ages,
        dicom=image.attributes,
        declared_group=study.declared_population,
        declared_age=study.declared_age_years,
        adult_probability=outcome.adult_probability,
        adult_threshold=outcome.adult_threshold,
    )


def _site_probability(probability: float, setting: SiteSetting | None, card: dict) -> float | None:
    """P(pneumonia) at the site's adopted prevalence, or None when none is adopted."""
    if setting is None or setting.prevalence is None or card.get("calibration_prevalence") is None:
        return None
    return float(shift_prevalence(probability, float(card["calibration_prevalence"]), setting.prevalence))


def _heatmap_fields(outcome: pipeline.Scored) -> dict:
    """The raw map and box; the overlay PNG is drawn when someone opens the study (``screening.intake.previews``)."""
    box = outcome.salient_box
    return {
        "heatmap_raw": np.round(outcome.heatmap.astype(float), 3).tolist(),
        "salient_box": None if box is None else [round(v, 4) for v in box],
        "evidence_outside_lungs": None if outcome.outside_lungs is None else round(outcome.outside_lungs, 4),
    }


def _write_results(
    scored: list[tuple[Study, pipeline.Scored, population.Verdict]],
    explainer: ExplainingScreener,
    setting: SiteSetting | None,
    per_study_ms: float,
) -> None:
    """All results of the chunk in one transaction and a handful of queries.

    Only studies still RUNNING are written (a sweep may have handed one to
    another worker meanwhile); the unique constraint drops a duplicate result.
    """
    now = timezone.now()
    extras = [_heatmap_fields(outcome) for _, outcome, _ in scored]
    with transaction.atomic():
        running = set(
            Study.objects.select_for_update()
            .filter(pk__in=[study.pk for study, _, _ in scored], status=Study.Status.RUNNING)
            .values_list("pk", flat=True)
        )
        results, finished = [], []
        for (study, outcome, verdict), extra in zip(scored, extras, strict=True):
            if study.pk not in running:
                continue
            prediction = outcome.prediction
            results.append(
                Result(
                    study=study,
                    model_version=explainer.version,
                    probability=float(prediction.probability),
                    label=prediction.label,
                    threshold=float(explainer.threshold if setting is None else setting.threshold),
                    site_setting=setting,
                    site_probability=_site_probability(prediction.probability, setting, explainer.card),
                    viral_probability=None
                    if prediction.viral_probability is None
                    else float(prediction.viral_probability),
                    inference_ms=per_study_ms,
                    population=verdict.population,
                    population_reason=verdict.reason,
                    population_source=verdict.source,
                    adult_probability=outcome.adult_probability,
                    population_check_version=outcome.population_check_version,
                    **extra,
                )
            )
            study.score = float(prediction.probability)
            study.model_label = prediction.label
            study.population = verdict.population
            study.population_reason = verdict.reason
            finished.append(study)
        if not finished:
            return
        Result.objects.bulk_create(results, ignore_conflicts=True)
        if settings.DICOM_DESTINATIONS and any(s.format == Study.Format.DICOM for s in finished):
            outbox.plan(
                Result.objects.filter(study__in=finished, model_version=explainer.version).values_list("pk", flat=True)
            )
        dicom = [
            column
            for column in [*DICOM_COLUMNS.values(), "study_date", "fingerprint"]
            if any(getattr(s, column) for s in finished)
        ]
        _update_columns(finished, _PER_STUDY_FIELDS + dicom)
        Study.objects.filter(pk__in=[s.pk for s in finished]).update(
            status=Study.Status.DONE, status_message="", finished_at=now, updated_at=now
        )


def _update_columns(studies: list[Study], columns: list[str]) -> None:
    """Write each study's own values of ``columns``: one ``UPDATE ... FROM (VALUES ...)`` on PostgreSQL.

    ``bulk_update`` builds a CASE expression per column and row, and its
    Python cost was a fifth of a chunk's wall time in the worker (34 ms of
    170 for 16 studies, profiled under ``bench.throughput``'s load). Other
    databases (SQLite for ``make run``) keep ``bulk_update``.
    """
    if connection.vendor != "postgresql":
        Study.objects.bulk_update(studies, columns)
        return
    fields = [Study._meta.get_field(name) for name in columns]
    casts = ["bigint", *(re.sub(r"\(.*\)", "", field.db_type(connection)) for field in fields)]
    first = "(" + ", ".join(f"%s::{cast}" for cast in casts) + ")"
    other = "(" + ", ".join(["%s"] * len(casts)) + ")"
    rows = ", ".join([first, *[other] * (len(studies) - 1)])
    names = ", ".join(["id", *(field.column for field in fields)])
    assignments = ", ".join(f"{field.column} = v.{field.column}" for field in fields)
    table = Study._meta.db_table
    params = []
    for study in studies:
        params.append(study.pk)
        params.extend(field.get_db_prep_value(getattr(study, field.attname), connection) for field in fields)
    with connection.cursor() as cursor:
        cursor.execute(
            f"UPDATE {table} AS s SET {assignments} FROM (VALUES {rows}) AS v({names}) WHERE s.id = v.id", params
        )
