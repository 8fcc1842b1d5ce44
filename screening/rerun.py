"""Re-running inference on studies when the served model has changed.

A re-run adds a result from the current model and keeps the old one, so the
trail shows what each model said. Re-running with the model that already
scored a study would change nothing and is refused.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from django.db import transaction

from screening import audit
from screening.models import AuditEvent, Study
from screening.queue import enqueue_studies_on_commit, mark_queued
from screening.served_model import current_model_version


@dataclass
class RerunOutcome:
    queued: list[int] = field(default_factory=list)
    same_model: list[int] = field(default_factory=list)
    not_finished: list[int] = field(default_factory=list)
    purged: list[int] = field(default_factory=list)  # the original is gone (retention): nothing to score


def rerun_with_current_model(studies, actor) -> RerunOutcome:
    version = current_model_version()
    outcome = RerunOutcome()
    with transaction.atomic():
        for study in studies.prefetch_related("results"):
            if study.status not in Study.FINISHED:
                outcome.not_finished.append(study.pk)
            elif study.file_purged_at is not None:
                outcome.purged.append(study.pk)
            elif any(result.model_version == version for result in study.results.all()):
                outcome.same_model.append(study.pk)
            else:
                outcome.queued.append(study.pk)
        mark_queued(Study.objects.filter(pk__in=outcome.queued), attempts=0, duplicate_of=None)
        for pk in outcome.queued:
            audit.record(AuditEvent.Action.RERUN, actor=actor, obj=Study(pk=pk), model_version=version)
        enqueue_studies_on_commit(outcome.queued)
    return outcome
