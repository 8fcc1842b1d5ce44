"""The population verdict: each signal, their precedence, and bad values that are ignored, never raised."""

import pytest

from ml.serving.population import (
    ADULT,
    OUTSIDE,
    PEDIATRIC,
    VALIDATED,
    AgeRange,
    age_from_dates,
    decide,
    parse_declared_age,
    parse_dicom_age,
)

KIDS = AgeRange(1, 5)


@pytest.mark.parametrize(
    ("value", "years"),
    [("045Y", 45), ("003Y", 3), ("018M", 1.5), ("006W", 6 * 7 / 365.25), ("200D", 200 / 365.25), ("000Y", 0)],
)
def test_dicom_ages_in_every_unit(value, years):
    assert parse_dicom_age(value).years == pytest.approx(years)


@pytest.mark.parametrize("value", ["45", "045X", "999Y", "45Y", "0045Y", "-01Y", "abcY", ""])
def test_malformed_dicom_ages_are_problems_not_errors(value):
    age = parse_dicom_age(value)
    assert age.years is None
    assert value in age.problem


def test_age_from_birth_and_study_dates():
    assert age_from_dates("20200315", "20230316").years == pytest.approx(3.0, abs=0.01)
    later = age_from_dates("20240101", "20230101")
    assert later.years is None
    assert "after StudyDate" in later.problem
    assert age_from_dates("2020-03-15", "20230316").problem


def test_the_validated_range_holds_whole_years_at_both_ends():
    assert KIDS.holds(1.0)
    assert KIDS.holds(5.9)
    assert not KIDS.holds(0.9)
    assert not KIDS.holds(6.0)


def test_dicom_age_decides_whatever_the_image_check_says():
    adult = decide(KIDS, dicom={"PatientAge": "045Y"}, adult_probability=0.01, adult_threshold=0.5)
    assert (adult.population, adult.source) == (OUTSIDE, "dicom_age")
    assert "patient age 45 y" in adult.reason
    assert "ages 1–5" in adult.reason
    child = decide(KIDS, dicom={"PatientAge": "003Y"}, adult_probability=0.99, adult_threshold=0.5)
    assert (child.population, child.source) == (VALIDATED, "dicom_age")


def test_dicom_age_outranks_the_declaration():
    verdict = decide(KIDS, dicom={"PatientAge": "004Y"}, declared_group=ADULT)
    assert verdict.population == VALIDATED
    assert verdict.source == "dicom_age"


def test_birth_date_is_used_when_patient_age_is_absent():
    verdict = decide(KIDS, dicom={"PatientBirthDate": "19800101", "StudyDate": "20240101"})
    assert verdict.population == OUTSIDE
    assert verdict.source == "dicom_birth_date"
    assert "19800101" not in verdict.reason  # the date of birth is never repeated


def test_a_malformed_dicom_age_falls_through_to_the_next_signal_and_says_so():
    verdict = decide(KIDS, dicom={"PatientAge": "045X"}, declared_age=3)
    assert verdict.population == VALIDATED
    assert verdict.source == "declared"
    assert "ignored" in verdict.reason
    assert "045X" in verdict.reason


def test_declarations():
    assert decide(KIDS, declared_group=ADULT).population == OUTSIDE
    assert decide(KIDS, declared_age=45).population == OUTSIDE
    assert decide(KIDS, declared_age=2).population == VALIDATED
    # A declared age is more precise than a declared group.
    assert decide(KIDS, declared_group=PEDIATRIC, declared_age=30).population == OUTSIDE


def test_a_declared_child_is_validated_but_a_disagreeing_image_check_is_noted():
    verdict = decide(KIDS, declared_group=PEDIATRIC, adult_probability=0.97, adult_threshold=0.5)
    assert verdict.population == VALIDATED
    assert "looks like an adult" in verdict.reason


def test_the_image_check_decides_when_nothing_else_says_anything():
    adult = decide(KIDS, adult_probability=0.97, adult_threshold=0.5)
    assert (adult.population, adult.source) == (OUTSIDE, "image_check")
    assert "0.97" in adult.reason
    child = decide(KIDS, adult_probability=0.03, adult_threshold=0.5)
    assert (child.population, child.source) == (VALIDATED, "image_check")


def test_without_any_signal_the_study_is_outside_not_silently_validated():
    verdict = decide(KIDS)
    assert verdict.population == OUTSIDE
    assert verdict.source == "none"


@pytest.mark.parametrize(("value", "years"), [("3", 3.0), (" 4.5 ", 4.5), (7, 7.0), ("", None), (None, None)])
def test_declared_ages_parse(value, years):
    assert parse_declared_age(value) == years


@pytest.mark.parametrize("value", ["three", "45y", "-1", "500", "nan"])
def test_declared_ages_that_are_not_ages_are_refused_with_a_message(value):
    with pytest.raises(ValueError, match="declared age"):
        parse_declared_age(value)


def test_completed_years_count_the_birthday_itself():
    assert int(age_from_dates("19700101", "20240101").years) == 54
    assert int(age_from_dates("19700102", "20240101").years) == 53
    assert int(age_from_dates("20200229", "20240228").years) == 3
    assert int(age_from_dates("20200229", "20240229").years) == 4
