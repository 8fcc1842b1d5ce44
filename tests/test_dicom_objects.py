"""The SR and heatmap Secondary Capture sent back to PACS: valid DICOM, in the source's study, stable UIDs."""

from __future__ import annotations

import dataclasses
import io
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pydicom
import pytest
from PIL import Image
from pydicom.uid import UID

from ml.serving.heatmap import overlay_png
from screening.dicom.objects import (
    DISCLAIMER,
    blend_overlay,
    derived_uid,
    heatmap_capture,
    structured_report,
)
from tests.factories import finding

SOURCE = Path(__file__).parent / "fixtures" / "bad" / "mono2.dcm"  # DX, 224x224, synthetic patient

FINDING = finding()


@pytest.fixture
def source() -> pydicom.Dataset:
    return pydicom.dcmread(SOURCE)


def run_tool(tool: str, path: Path) -> subprocess.CompletedProcess:
    if shutil.which(tool) is None:
        pytest.skip(f"DCMTK's {tool} is not installed (apt-get install dcmtk): the file-level check did NOT run")
    return subprocess.run(
        [tool, *(["+Pc", "+Pl"] if tool == "dsrdump" else []), str(path)], capture_output=True, text=True
    )


def written(dataset, tmp_path: Path, name: str) -> Path:
    path = tmp_path / name
    pydicom.dcmwrite(path, dataset, enforce_file_format=True)
    return path


def items(sequence):
    """Every content item of an SR content tree, depth first."""
    for item in sequence:
        yield item
        yield from items(item.get("ContentSequence", []))


def named(dataset, meaning: str):
    return [i for i in items(dataset.ContentSequence) if i.ConceptNameCodeSequence[0].CodeMeaning == meaning]


def number(dataset, meaning: str) -> float:
    (item,) = named(dataset, meaning)
    return float(item.MeasuredValueSequence[0].NumericValue)


# --- Structured Report --------------------------------------------------------


@pytest.mark.e2e
def test_sr_parses_with_dsrdump_and_states_the_finding(source, tmp_path):
    result = run_tool("dsrdump", written(structured_report(source, FINDING), tmp_path, "sr.dcm"))

    assert result.returncode == 0, result.stderr
    assert result.stderr == ""  # no warnings: relationship constraints and item values all pass
    out = result.stdout
    assert "Comprehensive SR Document" in out
    assert "Verification Flag   : UNVERIFIED" in out
    assert '(121071,DCM,"Finding")=(233604007,SCT,"Pneumonia")' in out
    assert '(705057003,SCT,"Presence")=(52101004,SCT,"Present")' in out
    assert '(P-PNEUMONIA,99PNEUMO,"Probability of pneumonia")="0.873" (1,UCUM,"no units")' in out
    assert '"Operating threshold")="0.42"' in out
    assert '(111003,DCM,"Algorithm Version")="v4"' in out
    assert DISCLAIMER in out


def test_a_normal_finding_says_pneumonia_absent(source):
    sr = structured_report(source, dataclasses.replace(FINDING, label="NORMAL", probability=0.1))

    (presence,) = named(sr, "Presence")
    assert presence.ConceptCodeSequence[0].CodeValue == "272519000"  # SCT Absent
    assert number(sr, "Probability of pneumonia") == pytest.approx(0.1)


def test_sr_joins_the_source_study_in_its_own_series(source):
    sr = structured_report(source, FINDING)

    assert sr.StudyInstanceUID == source.StudyInstanceUID
    assert sr.PatientID == "SYNTH-0001" == source.PatientID
    assert sr.PatientName == source.PatientName
    assert sr.AccessionNumber == "ACC0001"
    assert sr.SeriesInstanceUID != source.SeriesInstanceUID
    assert (sr.Modality, sr.SeriesNumber, sr.InstanceNumber) == ("SR", 990, 1)
    assert sr.SeriesDescription == "Pneumonia screening result (AI)"
    assert (sr.ManufacturerModelName, sr.SoftwareVersions) == ("pneumonia-screening", "v4")
    assert (sr.VerificationFlag, sr.CompletionFlag, sr.PreliminaryFlag) == ("UNVERIFIED", "COMPLETE", "PRELIMINARY")


def test_sr_references_the_source_instance(source):
    sr = structured_report(source, FINDING)

    (evidence,) = sr.CurrentRequestedProcedureEvidenceSequence
    (series,) = evidence.ReferencedSeriesSequence
    (instance,) = series.ReferencedSOPSequence
    assert (evidence.StudyInstanceUID, series.SeriesInstanceUID) == (source.StudyInstanceUID, source.SeriesInstanceUID)
    assert instance.ReferencedSOPInstanceUID == source.SOPInstanceUID
    (image,) = named(sr, "Source of Measurement")
    assert image.ReferencedSOPSequence[0].ReferencedSOPInstanceUID == source.SOPInstanceUID
    assert image.ReferencedSOPSequence[0].ReferencedSOPClassUID == source.SOPClassUID


def test_sr_carries_every_number_and_the_population_verdict(source):
    sr = structured_report(source, FINDING)

    assert number(sr, "Operating threshold") == pytest.approx(0.42)
    assert number(sr, "Probability of viral cause given pneumonia") == pytest.approx(0.3)
    assert number(sr, "Probability of pneumonia at site prevalence") == pytest.approx(0.61)
    assert number(sr, "Share of the evidence outside the lung fields") == pytest.approx(0.34)
    (population,) = named(sr, "Population check")
    assert population.TextValue == "outside: Declared age 45 years is outside the validated 1-5 years."


def test_sr_leaves_out_what_is_unknown(source):
    unknown = dataclasses.replace(
        FINDING,
        viral_probability=None,
        shown_probability=None,
        population="",
        population_reason="",
        salient_box=None,
        evidence_outside_lungs=None,
    )
    sr = structured_report(source, unknown)

    for meaning in (
        "Probability of viral cause given pneumonia",
        "Population check",
        "Image Region",
        "Share of the evidence outside the lung fields",
    ):
        assert named(sr, meaning) == []
    assert named(sr, "Probability of pneumonia at site prevalence") == []


def test_salient_box_is_drawn_in_the_source_pixels(source):
    (region,) = named(structured_report(source, FINDING), "Image Region")

    assert region.GraphicType == "POLYLINE"
    corners = np.array(region.GraphicData).reshape(-1, 2)  # (column, row) pairs, closed
    assert corners.min(axis=0).tolist() == [56.0, 112.0]  # 0.25 * 224, 0.5 * 224
    assert corners.max(axis=0).tolist() == [168.0, 224.0]
    assert corners[0].tolist() == corners[-1].tolist()
    assert region.ContentSequence[0].ReferencedSOPSequence[0].ReferencedSOPInstanceUID == source.SOPInstanceUID


def test_an_unknown_label_is_refused(source):
    with pytest.raises(ValueError, match="PNEUMONIA or NORMAL"):
        structured_report(source, dataclasses.replace(FINDING, label="MAYBE"))


def test_a_source_without_type_2_attributes_is_accepted_and_left_untouched(source):
    assert "PatientBirthDate" not in source
    assert "StudyDate" not in source

    sr = structured_report(source, FINDING)

    assert sr.PatientBirthDate == ""
    assert sr.StudyDate == ""
    assert "PatientBirthDate" not in source
    assert "StudyDate" not in source


# --- UIDs ---------------------------------------------------------------------


def test_derived_uids_are_deterministic_valid_and_distinct():
    uid = "1.2.826.0.1.3680043.8.498.84547491415472519466690102255169081728"
    kinds = ("sr", "sr-series", "sc", "sc-series")

    first = [derived_uid(uid, "v4", kind) for kind in kinds]

    assert first == [derived_uid(uid, "v4", kind) for kind in kinds]
    assert len(set(first)) == 4
    assert set(first).isdisjoint(derived_uid(uid, "v5", kind) for kind in kinds)
    assert derived_uid(uid + "1", "v4", "sr") != first[0]
    for value in first:
        assert UID(value).is_valid
        assert len(value) <= 64
        assert value.startswith("2.25.")


def test_an_unknown_uid_kind_is_refused():
    with pytest.raises(ValueError, match="unknown derived UID kind"):
        derived_uid("1.2.3", "v4", "seg")


def test_resending_the_same_result_gives_the_same_instance(source):
    first, again = structured_report(source, FINDING), structured_report(source, FINDING)
    newer = structured_report(source, dataclasses.replace(FINDING, model_version="v5"))

    assert (first.SOPInstanceUID, first.SeriesInstanceUID) == (again.SOPInstanceUID, again.SeriesInstanceUID)
    assert first.SOPInstanceUID != newer.SOPInstanceUID


# --- overlay and Secondary Capture ----------------------------------------------


def rgba_png(rgba: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(rgba, mode="RGBA").save(buffer, format="PNG")
    return buffer.getvalue()


def test_blend_keeps_grey_where_alpha_is_zero_and_colours_where_it_is_not():
    gray = np.tile(np.arange(0, 200, 2, dtype=np.uint8), (60, 1))  # 60 x 100 ramp
    rgba = np.zeros((60, 100, 4), np.uint8)
    rgba[:, 50:] = (255, 0, 0, 255)  # opaque red on the right half
    rgba[:, 25:50] = (0, 0, 255, 128)  # half-transparent blue

    out = blend_overlay(gray, rgba_png(rgba))

    assert out.shape == (60, 100, 3)
    assert out.dtype == np.uint8
    assert (out[:, :25] == gray[:, :25, None]).all()
    assert (out[:, 50:] == (255, 0, 0)).all()
    expected_blue = np.rint(gray[:, 25:50] * (1 - 128 / 255) + 255 * 128 / 255)
    assert np.array_equal(out[:, 25:50, 2], expected_blue.astype(np.uint8))
    assert np.array_equal(out[:, 25:50, 0], np.rint(gray[:, 25:50] * (1 - 128 / 255)).astype(np.uint8))


def test_blend_stretches_the_service_overlay_to_the_image():
    gray = np.full((300, 480), 90, np.uint8)
    heatmap = np.zeros((14, 14), np.float32)
    heatmap[2:5, 9:12] = 1.0  # hot in the upper right only

    out = blend_overlay(gray, overlay_png(heatmap, 480, 300))  # the PNG is 256 x 160

    assert out.shape == (300, 480, 3)
    assert (out[250:, :100] == 90).all()  # far from the map: alpha 0, grey untouched
    assert np.abs(out[50:90, 330:390].astype(int) - 90).max() > 50  # under the map: coloured


def test_blend_refuses_a_colour_image():
    with pytest.raises(ValueError, match="H x W uint8"):
        blend_overlay(np.zeros((4, 4, 3), np.uint8), rgba_png(np.zeros((4, 4, 4), np.uint8)))


def heatmap_image(source) -> np.ndarray:
    heatmap = np.zeros((14, 14), np.float32)
    heatmap[6:10, 3:7] = 1.0
    return blend_overlay(source.pixel_array, overlay_png(heatmap, source.Columns, source.Rows, (0.2, 0.4, 0.5, 0.7)))


def test_heatmap_capture_is_an_rgb_image_in_the_source_study(source, tmp_path):
    image = heatmap_image(source)
    path = written(heatmap_capture(source, image, FINDING), tmp_path, "sc.dcm")

    capture = pydicom.dcmread(path)
    assert capture.SOPClassUID == pydicom.uid.SecondaryCaptureImageStorage
    assert capture.PhotometricInterpretation == "RGB"
    assert capture.SamplesPerPixel == 3
    assert np.array_equal(capture.pixel_array, image)
    assert capture.StudyInstanceUID == source.StudyInstanceUID
    assert (capture.PatientID, capture.PatientName) == (source.PatientID, source.PatientName)
    assert capture.SeriesInstanceUID not in (
        source.SeriesInstanceUID,
        structured_report(source, FINDING).SeriesInstanceUID,
    )
    assert (capture.SeriesNumber, capture.SeriesDescription) == (991, "Pneumonia screening heatmap (AI)")
    assert (capture.ConversionType, capture.BurnedInAnnotation) == ("WSD", "NO")
    assert capture.ImageComments == DISCLAIMER
    assert capture.SourceImageSequence[0].ReferencedSOPInstanceUID == source.SOPInstanceUID
    assert capture.SOPInstanceUID == derived_uid(source.SOPInstanceUID, "v4", "sc")


@pytest.mark.e2e
def test_heatmap_capture_parses_with_dcmdump(source, tmp_path):
    result = run_tool("dcmdump", written(heatmap_capture(source, heatmap_image(source), FINDING), tmp_path, "sc.dcm"))

    assert result.returncode == 0, result.stderr
    assert result.stderr == ""
    assert "SecondaryCaptureImageStorage" in result.stdout
    assert "[RGB]" in result.stdout


def test_heatmap_capture_refuses_a_grey_image(source):
    with pytest.raises(ValueError, match="H x W x 3 uint8"):
        heatmap_capture(source, source.pixel_array, FINDING)
