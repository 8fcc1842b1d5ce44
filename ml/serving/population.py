"""Is this patient inside the population the model was validated on?

The model was validated on children aged 1-5. On adults it scores as
confidently as on children but at chance level, so every scored study gets a
verdict, ``validated`` or ``outside``, with a reason a person can read. The
signals, strongest first:

1. the DICOM header: ``PatientAge``, else ``PatientBirthDate`` with ``StudyDate``;
2. what the submitter declared for the batch or the study (a group or an age);
3. the image-based population check (``PopulationCheck``), when neither says anything.

A malformed header value or declaration is never an error: it is ignored, the
next signal decides, and the reason says what was ignored and why.
"""

from __future__ import annotations

import datetime
import re
from dataclasses import dataclass

VALIDATED = "validated"
OUTSIDE = "outside"

PEDIATRIC = "pediatric"  # declared: children in the validated age range
ADULT = "adult"
DECLARED_GROUPS = (PEDIATRIC, ADULT)

# DICOM AS value representation: three digits and a unit (PS3.5 6.2).
_DICOM_AGE = re.compile(r"^(\d{3})([DWMY])$")
_DAYS_PER_UNIT = {"D": 1.0, "W": 7.0, "M": 365.25 / 12, "Y": 365.25}
OLDEST_PLAUSIBLE_YEARS = 130


@dataclass(frozen=True)
class AgeRange:
    """Validated ages in whole years, both ends included: (1, 5) holds 1.0 up to, not including, 6.0."""

    youngest: int
    oldest: int

    def holds(self, years: float) -> bool:
        return self.youngest <= years < self.oldest + 1

    def __str__(self) -> str:
        return f"ages {self.youngest}–{self.oldest}"


@dataclass(frozen=True)
class Verdict:
    population: str  # VALIDATED or OUTSIDE
    reason: str  # for the radiologist: which signal decided, and anything ignored on the way
    source: str  # "dicom_age", "dicom_birth_date", "declared", "image_check" or "none"


@dataclass(frozen=True)
class Age:
    """An age read from somewhere, or why it could not be read."""

    years: float | None
    problem: str | None = None


def age_from_dicom(attributes: dict[str, str]) -> tuple[Age | None, str]:
    """The patient's age from a DICOM header, and which attribute gave it.

    ``(None, "")`` when the header says nothing; an ``Age`` with a ``problem``
    when it says something unusable (the caller ignores it and says so).
    """
    raw_age = (attributes.get("PatientAge") or "").strip()
    if raw_age:
        return parse_dicom_age(raw_age), "dicom_age"
    birth, study = (attributes.get(k, "").strip() for k in ("PatientBirthDate", "StudyDate"))
    if birth and study:
        return age_from_dates(birth, study), "dicom_birth_date"
    return None, ""


def parse_dicom_age(value: str) -> Age:
    """``"045Y"`` -> 45 years; ``"018M"`` -> 1.5 years. Anything else is a problem, never an exception."""
    match = _DICOM_AGE.match(value)
    if not match:
        return Age(None, f"PatientAge {value!r} is not a DICOM age (three digits and D, W, M or Y, e.g. 045Y)")
    years = int(match.group(1)) * _DAYS_PER_UNIT[match.group(2)] / 365.25
    if years > OLDEST_PLAUSIBLE_YEARS:
        return Age(None, f"PatientAge {value!r} is not a plausible age")
    return Age(years)


def age_from_dates(birth: str, study: str) -> Age:
    """Age at the study from DICOM DA values (YYYYMMDD)."""
    try:
        born = datetime.datetime.strptime(birth, "%Y%m%d").date()
        taken = datetime.datetime.strptime(study, "%Y%m%d").date()
    except ValueError:
        return Age(None, f"PatientBirthDate {birth!r} or StudyDate {study!r} is not a DICOM date (YYYYMMDD)")
    if born > taken:
        return Age(None, f"PatientBirthDate {birth} is after StudyDate {study}")
    # Completed years by the calendar (a birthday counts on the day), plus the part of the year since.
    completed = taken.year - born.year - ((taken.month, taken.day) < (born.month, born.day))
    since_birthday = (taken - _add_years(born, completed)).days
    years = completed + since_birthday / 366
    if years > OLDEST_PLAUSIBLE_YEARS:
        return Age(None, f"PatientBirthDate {birth} gives an implausible age at StudyDate {study}")
    return Age(years)


def _add_years(day: datetime.date, years: int) -> datetime.date:
    try:
        return day.replace(year=day.year + years)
    except ValueError:  # 29 February in a year that has none
        return day.replace(year=day.year + years, day=28)


def describe_years(years: float) -> str:
    """Age as a clinician writes it: months under two, whole years (completed) after."""
    if years < 2:
        return f"{years * 12:.0f} months"
    return f"{int(years)} y"


def decide(
    validated: AgeRange,
    *,
    dicom: dict[str, str] | None = None,
    declared_group: str = "",
    declared_age: float | None = None,
    adult_probability: float | None = None,
    adult_threshold: float | None = None,
) -> Verdict:
    """The verdict for one study from every signal it has, strongest first."""
    ignored: list[str] = []

    def with_ignored(text: str) -> str:
        return text + "".join(f" (ignored: {note})" for note in ignored)

    def from_age(years: float, where: str, source: str) -> Verdict:
        inside = validated.holds(years)
        text = f"{where} {describe_years(years)}; the model is validated for {validated}"
        return Verdict(VALIDATED if inside else OUTSIDE, with_ignored(text), source)

    age, source = age_from_dicom(dicom or {})
    if age is not None:
        if age.years is not None:
            return from_age(age.years, "patient age", source)
        ignored.append(age.problem or "unreadable age")

    if declared_age is not None:
        return from_age(declared_age, "declared age", "declared")
    if declared_group == ADULT:
        return Verdict(OUTSIDE, with_ignored(f"declared adult; the model is validated for {validated}"), "declared")
    if declared_group == PEDIATRIC:
        text = f"declared a child in the validated range ({validated})"
        if adult_probability is not None and adult_threshold is not None and adult_probability >= adult_threshold:
            text += f"; note: the image looks like an adult chest X-ray (population check {adult_probability:.2f})"
        return Verdict(VALIDATED, with_ignored(text), "declared")

    if adult_probability is None or adult_threshold is None:
        return Verdict(OUTSIDE, with_ignored("no age known and no population check available"), "none")
    if adult_probability >= adult_threshold:
        text = f"the image looks like an adult chest X-ray (population check {adult_probability:.2f})"
        return Verdict(OUTSIDE, with_ignored(text), "image_check")
    text = f"the image looks like a child's chest X-ray (population check {adult_probability:.2f})"
    return Verdict(VALIDATED, with_ignored(text), "image_check")


def parse_declared_age(value) -> float | None:
    """A declared age in years from a form, API or command line; ``ValueError`` with a message if it is not one."""
    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    try:
        years = float(str(value).strip())
    except ValueError:
        raise ValueError(f"The declared age {str(value)[:40]!r} is not a number of years.") from None
    if not 0 <= years <= OLDEST_PLAUSIBLE_YEARS or years != years:
        raise ValueError(f"The declared age {years:g} is not between 0 and {OLDEST_PLAUSIBLE_YEARS} years.")
    return years
