"""Reasons the service stores in English, shown in the reader's language.

Refusal, failure and population reasons are written once, by a worker that
has no request and no language, into ``Study.status_message`` and
``population_reason``; they are also what the audit trail, CSV exports and
the API keep, so they stay English in the database. Pages translate them
when they show them: each sentence the service can write is a pattern here
with a translatable template, and the parts it was built from (an age, a
limit, a modality) are put back in. A sentence no pattern knows is shown as
stored, never dropped.

Population reasons are built from parts (``…; the model is validated for
ages 1–5 (ignored: …)``), so they are translated part by part.
"""

from __future__ import annotations

import re

from django.utils.translation import get_language, gettext, gettext_noop

# What the gate says an image looks like (ml.serving.gate.LOOKS_LIKE), keyed by the English phrase.
LOOKS_LIKE = {
    "a blank or nearly uniform image": gettext_noop("a blank or nearly uniform image"),
    "random noise rather than an image": gettext_noop("random noise rather than an image"),
    "a colour photograph or screenshot": gettext_noop("a colour photograph or screenshot"),
    "a chest X-ray turned on its side; please send it upright": gettext_noop(
        "a chest X-ray turned on its side; please send it upright"
    ),
    "a chest X-ray upside down; please send it upright": gettext_noop(
        "a chest X-ray upside down; please send it upright"
    ),
    "a chest X-ray with inverted grey levels (bones dark); please send it as displayed for reading": gettext_noop(
        "a chest X-ray with inverted grey levels (bones dark); please send it as displayed for reading"
    ),
    "a document, chart or screenshot": gettext_noop("a document, chart or screenshot"),
    "a photograph, drawing or pattern rather than a radiograph": gettext_noop(
        "a photograph, drawing or pattern rather than a radiograph"
    ),
}

_NUMBER = r"[0-9]+(?:\.[0-9]+)?"
_AGES = rf"ages (?P<youngest>{_NUMBER})–(?P<oldest>{_NUMBER})"

# (pattern over the whole stored sentence, translatable template with the pattern's named groups)
SENTENCES: list[tuple[re.Pattern, str]] = [
    (re.compile(pattern), template)
    for pattern, template in [
        # ml.serving.gate
        (
            r"This does not look like a frontal chest X-ray of the kind this service was validated on\.",
            gettext_noop("This does not look like a frontal chest X-ray of the kind this service was validated on."),
        ),
        (
            r"This does not look like a frontal chest X-ray \(it looks like (?P<looks_like>.+)\)\.",
            gettext_noop("This does not look like a frontal chest X-ray (it looks like %(looks_like)s)."),
        ),
        # ml.serving.decode
        (r"The file is not a JPEG, PNG or DICOM image\.", gettext_noop("The file is not a JPEG, PNG or DICOM image.")),
        (r"The image is too large to process\.", gettext_noop("The image is too large to process.")),
        (
            r"The (?P<format>JPEG|PNG|DICOM) file is truncated or damaged and cannot be read\.",
            gettext_noop("The %(format)s file is truncated or damaged and cannot be read."),
        ),
        (
            rf"The file is larger than the (?P<limit>{_NUMBER}) MB limit\.",
            gettext_noop("The file is larger than the %(limit)s MB limit."),
        ),
        (r"The file is empty\.", gettext_noop("The file is empty.")),
        (
            rf"The image is larger than the (?P<limit>{_NUMBER}) megapixel limit and was not opened\.",
            gettext_noop("The image is larger than the %(limit)s megapixel limit and was not opened."),
        ),
        (r"The image has no pixels\.", gettext_noop("The image has no pixels.")),
        (
            r"The DICOM file contains no image \(it has no pixel data\)\.",
            gettext_noop("The DICOM file contains no image (it has no pixel data)."),
        ),
        (
            r"This is an? (?P<modality>.+) image; the service screens chest radiographs \(CR/DX\) only\.",
            gettext_noop("This is a %(modality)s image; the service screens chest radiographs (CR/DX) only."),
        ),
        (
            r"This is a lateral view; the service screens frontal \(PA or AP\) chest radiographs only\.",
            gettext_noop("This is a lateral view; the service screens frontal (PA or AP) chest radiographs only."),
        ),
        (
            r"The DICOM image uses an unknown transfer syntax, which this service cannot decode\.",
            gettext_noop("The DICOM image uses an unknown transfer syntax, which this service cannot decode."),
        ),
        (
            r"The DICOM image is compressed with (?P<syntax>.+), which this service cannot decode\.",
            gettext_noop("The DICOM image is compressed with %(syntax)s, which this service cannot decode."),
        ),
        (
            r"The DICOM image uses a colour encoding this service does not support\.",
            gettext_noop("The DICOM image uses a colour encoding this service does not support."),
        ),
        # worker.scoring and screening.queue
        (
            r"The file could not be processed because of an internal error; an administrator has been notified in "
            r"the logs\.",
            gettext_noop(
                "The file could not be processed because of an internal error; an administrator has been notified "
                "in the logs."
            ),
        ),
        (
            r"Scoring took longer than the time limit, several times over\.",
            gettext_noop("Scoring took longer than the time limit, several times over."),
        ),
        (
            r"The database was unavailable while scoring, several times over\.",
            gettext_noop("The database was unavailable while scoring, several times over."),
        ),
        (
            r"Scoring was interrupted (?P<n>[0-9]+) times \(worker stopped or timed out\); the file may be too "
            r"demanding to process\. Re-submit it or ask an administrator\.",
            gettext_noop(
                "Scoring was interrupted %(n)s times (worker stopped or timed out); the file may be too demanding "
                "to process. Re-submit it or ask an administrator."
            ),
        ),
        # screening.intake.acceptance and screening.intake.submission: files refused at upload (Batch.upload_report)
        (
            rf"File is larger than the (?P<limit>{_NUMBER}) MB limit\.",
            gettext_noop("File is larger than the %(limit)s MB limit."),
        ),
        (r"File is empty\.", gettext_noop("File is empty.")),
        (
            r"Archives inside archives are not accepted; upload the inner zip itself\.",
            gettext_noop("Archives inside archives are not accepted; upload the inner zip itself."),
        ),
        (
            r"Not a JPEG, PNG or DICOM file \(judged by its content, not its name\)\.",
            gettext_noop("Not a JPEG, PNG or DICOM file (judged by its content, not its name)."),
        ),
        (
            r"Zip archive is damaged and cannot be opened\.",
            gettext_noop("Zip archive is damaged and cannot be opened."),
        ),
        (
            rf"Zip archive would expand to (?P<size>{_NUMBER}) MB, over the (?P<limit>{_NUMBER}) MB limit; split it "
            r"into smaller archives\.",
            gettext_noop(
                "Zip archive would expand to %(size)s MB, over the %(limit)s MB limit; split it into smaller archives."
            ),
        ),
        (
            r"Unsafe path inside the zip archive \(absolute or containing '\.\.'\)\.",
            gettext_noop("Unsafe path inside the zip archive (absolute or containing '..')."),
        ),
        (r"File is encrypted inside the zip archive\.", gettext_noop("File is encrypted inside the zip archive.")),
        (
            r"Compression ratio is implausibly high \(possible zip bomb\); file skipped\.",
            gettext_noop("Compression ratio is implausibly high (possible zip bomb); file skipped."),
        ),
        (
            r"Batch limit of (?P<n>[0-9]+) files reached; file not accepted\.",
            gettext_noop("Batch limit of %(n)s files reached; file not accepted."),
        ),
        (
            r"File inside the zip archive is damaged and cannot be extracted\.",
            gettext_noop("File inside the zip archive is damaged and cannot be extracted."),
        ),
        (
            r"Zip archive expands beyond the size limit; remaining files skipped\.",
            gettext_noop("Zip archive expands beyond the size limit; remaining files skipped."),
        ),
        (
            r"Your storage quota of (?P<mb>[0-9]+) MB is used up; file not accepted\. Older originals are removed "
            r"under the retention policy, or ask an administrator to raise SCREENING_USER_QUOTA_MB\.",
            gettext_noop(
                "Your storage quota of %(mb)s MB is used up; file not accepted. Older originals are removed under "
                "the retention policy, or ask an administrator to raise SCREENING_USER_QUOTA_MB."
            ),
        ),
        (
            r"Same content as (?P<name>.+); stored once\.",
            gettext_noop("Same content as %(name)s; stored once."),
        ),
        # screening.intake.submission
        (
            r"Identical to study (?P<study>[0-9]+) \(batch (?P<batch>[0-9]+)\), already scored; its result is shown\.",
            gettext_noop("Identical to study %(study)s (batch %(batch)s), already scored; its result is shown."),
        ),
        (
            r"Identical to a file the service has already scored; that result is shown\.",
            gettext_noop("Identical to a file the service has already scored; that result is shown."),
        ),
        # Raised while answering a request, by code that also runs without one (the CLI, a worker):
        # ml.serving.population.parse_declared_age, screening.population, screening.dicom.results
        # (whose message the DICOM outbox also stores)
        (
            r"The declared age (?P<value>'.*') is not a number of years\.",
            gettext_noop("The declared age %(value)s is not a number of years."),
        ),
        (
            rf"The declared age (?P<years>-?{_NUMBER}(?:e[+-]?[0-9]+)?|-?inf|nan) is not between 0 and "
            rf"(?P<oldest>{_NUMBER}) years\.",
            gettext_noop("The declared age %(years)s is not between 0 and %(oldest)s years."),
        ),
        (
            r"The declared population (?P<value>'.*') is not one of: (?P<choices>[a-z, ]+)\.",
            gettext_noop("The declared population %(value)s is not one of: %(choices)s."),
        ),
        (
            r"The study was not a DICOM file, so there is no DICOM study to add results to\.",
            gettext_noop("The study was not a DICOM file, so there is no DICOM study to add results to."),
        ),
        (
            r"The original DICOM file was removed under the retention policy\.",
            gettext_noop("The original DICOM file was removed under the retention policy."),
        ),
        (
            r"The original DICOM file is missing from storage\.",
            gettext_noop("The original DICOM file is missing from storage."),
        ),
        (r"The result has no heatmap\.", gettext_noop("The result has no heatmap.")),
        (
            r"The heatmap could not be rendered: (?P<detail>.*)",
            gettext_noop("The heatmap could not be rendered: %(detail)s"),
        ),
    ]
]

# Parts of a population reason (ml.serving.population.decide), each matched on its own.
POPULATION_PARTS: list[tuple[re.Pattern, str]] = [
    (re.compile(pattern), template)
    for pattern, template in [
        (
            rf"patient age (?P<age>{_NUMBER}) months; the model is validated for {_AGES}",
            gettext_noop("patient age %(age)s months; the model is validated for ages %(youngest)s–%(oldest)s"),
        ),
        (
            rf"patient age (?P<age>{_NUMBER}) y; the model is validated for {_AGES}",
            gettext_noop("patient age %(age)s y; the model is validated for ages %(youngest)s–%(oldest)s"),
        ),
        (
            rf"declared age (?P<age>{_NUMBER}) months; the model is validated for {_AGES}",
            gettext_noop("declared age %(age)s months; the model is validated for ages %(youngest)s–%(oldest)s"),
        ),
        (
            rf"declared age (?P<age>{_NUMBER}) y; the model is validated for {_AGES}",
            gettext_noop("declared age %(age)s y; the model is validated for ages %(youngest)s–%(oldest)s"),
        ),
        (
            rf"declared adult; the model is validated for {_AGES}",
            gettext_noop("declared adult; the model is validated for ages %(youngest)s–%(oldest)s"),
        ),
        (
            rf"declared a child in the validated range \({_AGES}\); note: the image looks like an adult chest X-ray "
            rf"\(population check (?P<p>{_NUMBER})\)",
            gettext_noop(
                "declared a child in the validated range (ages %(youngest)s–%(oldest)s); note: the image looks like "
                "an adult chest X-ray (population check %(p)s)"
            ),
        ),
        (
            rf"declared a child in the validated range \({_AGES}\)",
            gettext_noop("declared a child in the validated range (ages %(youngest)s–%(oldest)s)"),
        ),
        (
            r"no age known and no population check available",
            gettext_noop("no age known and no population check available"),
        ),
        (
            rf"the image looks like an adult chest X-ray \(population check (?P<p>{_NUMBER})\)",
            gettext_noop("the image looks like an adult chest X-ray (population check %(p)s)"),
        ),
        (
            rf"the image looks like a child's chest X-ray \(population check (?P<p>{_NUMBER})\)",
            gettext_noop("the image looks like a child's chest X-ray (population check %(p)s)"),
        ),
        # What was ignored on the way (ml.serving.population.age_from_dicom)
        (
            r"PatientAge (?P<value>'.*') is not a DICOM age \(three digits and D, W, M or Y, e\.g\. 045Y\)",
            gettext_noop("PatientAge %(value)s is not a DICOM age (three digits and D, W, M or Y, e.g. 045Y)"),
        ),
        (
            r"PatientAge (?P<value>'.*') is not a plausible age",
            gettext_noop("PatientAge %(value)s is not a plausible age"),
        ),
        (
            r"PatientBirthDate (?P<birth>'.*') or StudyDate (?P<study>'.*') is not a DICOM date \(YYYYMMDD\)",
            gettext_noop("PatientBirthDate %(birth)s or StudyDate %(study)s is not a DICOM date (YYYYMMDD)"),
        ),
        (
            r"PatientBirthDate (?P<birth>[0-9]+) is after StudyDate (?P<study>[0-9]+)",
            gettext_noop("PatientBirthDate %(birth)s is after StudyDate %(study)s"),
        ),
        (
            r"PatientBirthDate (?P<birth>[0-9]+) gives an implausible age at StudyDate (?P<study>[0-9]+)",
            gettext_noop("PatientBirthDate %(birth)s gives an implausible age at StudyDate %(study)s"),
        ),
        (r"unreadable age", gettext_noop("unreadable age")),
    ]
]
_IGNORED = " (ignored: "


def _translated(text: str, catalogue: list[tuple[re.Pattern, str]]) -> str | None:
    for pattern, template in catalogue:
        match = pattern.fullmatch(text)
        if match:
            values = match.groupdict()
            if "looks_like" in values:
                values["looks_like"] = gettext(LOOKS_LIKE.get(values["looks_like"], values["looks_like"]))
            return gettext(template) % values
    return None


def _english() -> bool:
    return (get_language() or "en").startswith("en")


def status_message(text: str) -> str:
    """A stored refusal, failure or duplicate note in the active language (as stored when unknown)."""
    if not text or _english():
        return text
    return _translated(text, SENTENCES) or text


def upload_items(items: list[dict[str, str]]) -> list[dict[str, str]]:
    """Upload-report items (``{"file", "error"}`` or ``{"file", "note"}``), their sentence in the active language."""
    return [{key: status_message(v) if key in ("error", "note") else v for key, v in item.items()} for item in items]


def population_reason(text: str) -> str:
    """A stored population reason in the active language, part by part (as stored where a part is unknown)."""
    if not text or _english():
        return text
    main, *ignored = text.split(_IGNORED)
    parts = [_translated(main, POPULATION_PARTS) or main]
    for note in ignored:
        note = note.removesuffix(")")
        translated = _translated(note, POPULATION_PARTS) or note
        parts.append(gettext(" (ignored: %(note)s)") % {"note": translated})
    return "".join(parts)
