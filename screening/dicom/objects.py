"""The DICOM objects the service sends back to PACS: a Structured Report and a heatmap Secondary Capture.

Pure functions of the source instance and the model's result: no database, no
settings, nothing written to disk. Both objects join the source's study (patient
and study modules copied from it, so PACS files them with the radiograph) in
their own series, and both carry the intended-use sentence, because a PACS
viewer shows them without our banners around them.

UIDs are derived from the source SOP Instance UID and the model version, never
random: re-sending the same result yields the same SOP Instance UID, which
PACS treats as a duplicate instead of filing a second copy.

Codes used in the SR (all exist in their schemes; ``99PNEUMO`` is ours):

- root container: LOINC 18748-4 "Diagnostic Imaging Report"
- finding: DCM 121071 "Finding" = SCT 233604007 "Pneumonia", with
  SCT 705057003 "Presence" = SCT 52101004 "Present" / SCT 272519000 "Absent"
  (the last two are DICOM CID 240 "Present-Absent"). "Pneumonia: Absent" says
  what the model measured; "Normal" would claim it looked for everything else.
- algorithm: DCM 111001 "Algorithm Name", DCM 111003 "Algorithm Version"
  (TID 4019), observer context DCM 121005 "Observer Type" = DCM 121007 "Device"
- source image: DCM 121112 "Source of Measurement"; salient box:
  DCM 111030 "Image Region" (SCOORD POLYLINE in the source's pixels)
- disclaimer: DCM 121106 "Comment"
- probabilities and threshold: UCUM "1" (a fraction in [0, 1]) under the
  private scheme ``99PNEUMO`` (PS3.16 reserves designators starting "99" for
  local use; the SR's Coding Scheme Identification Sequence describes it):
  P-PNEUMONIA, THRESHOLD, P-VIRAL, P-SHOWN, POPULATION.
"""

from __future__ import annotations

import io
import uuid
from dataclasses import dataclass

import highdicom as hd
import numpy as np
from highdicom.coding_schemes import CodingSchemeIdentificationItem
from PIL import Image
from pydicom import Dataset
from pydicom.sr.codedict import codes
from pydicom.uid import ExplicitVRLittleEndian

DISCLAIMER = (
    "Decision support, not a diagnosis: a radiologist must read the image; "
    "the model was validated on pediatric chest radiographs only."
)
MANUFACTURER = "pneumonia-screening (open source)"
SR_SERIES_NUMBER = 990
SC_SERIES_NUMBER = 991
SR_SERIES_DESCRIPTION = "Pneumonia screening result (AI)"
SC_SERIES_DESCRIPTION = "Pneumonia screening heatmap (AI)"

PRIVATE_SCHEME = "99PNEUMO"
PNEUMONIA = "PNEUMONIA"
NORMAL = "NORMAL"


@dataclass(frozen=True)
class Finding:
    """What the model said about one source instance, as written into the SR."""

    label: str  # "PNEUMONIA" or "NORMAL"
    probability: float  # calibrated P(pneumonia) the label was set from (0..1)
    threshold: float  # operating threshold that set the label
    shown_probability: float | None  # site-prevalence-shifted probability shown to readers, else None
    viral_probability: float | None  # P(viral | pneumonia), when the model has that head
    model_name: str  # e.g. "pneumonia-screening"
    model_version: str  # e.g. "v4"
    population: str  # "validated", "outside" or "" (unknown)
    population_reason: str  # one sentence, may be ""
    salient_box: list[float] | None  # [x0, y0, x1, y1] as image fractions, or None
    # Share of the heatmap's evidence outside the lung fields; None for models without a lung-field head.
    evidence_outside_lungs: float | None = None


# --- UIDs -------------------------------------------------------------------

UID_KINDS = frozenset({"sr", "sr-series", "sc", "sc-series"})
# Fixed forever: changing it would give every re-sent result a new UID.
_UID_NAMESPACE = uuid.uuid5(uuid.NAMESPACE_URL, "urn:pneumonia-screening:derived-dicom-uid")


def derived_uid(source_sop_instance_uid: str, model_version: str, kind: str) -> str:
    """A deterministic ``2.25.<uuid>`` UID for one derived object of one source instance and model version.

    Name-based (UUID version 5, ITU-T X.667), so the same result re-sent gets
    the same UID and PACS de-duplicates it, while a new model version's result
    is a new instance. At most 44 characters.
    """
    if kind not in UID_KINDS:
        raise ValueError(f"unknown derived UID kind {kind!r}; known: {', '.join(sorted(UID_KINDS))}")
    name = "/".join((str(source_sop_instance_uid), kind, model_version))
    return f"2.25.{uuid.uuid5(_UID_NAMESPACE, name).int}"


def _device_uid(model_name: str, model_version: str) -> str:
    """The SR's Device Observer UID: one per model name and version."""
    return f"2.25.{uuid.uuid5(_UID_NAMESPACE, 'device/' + model_name + '/' + model_version).int}"


# --- the source's header ----------------------------------------------------

# Type 2 patient and study attributes highdicom reads as attributes: an
# anonymised or hand-made source may lack them, and PS3.3 allows them empty.
_TYPE2_DEFAULTS = (
    "PatientName",
    "PatientID",
    "PatientBirthDate",
    "PatientSex",
    "StudyID",
    "StudyDate",
    "StudyTime",
    "ReferringPhysicianName",
    "AccessionNumber",
)


def _header(source: Dataset) -> Dataset:
    """The source without its pixels, missing Type 2 patient/study attributes present but empty.

    A new dataset rather than a copy: pydicom's shallow copy shares the
    element dictionary, so adding the defaults would change the caller's source.
    """
    header = Dataset()
    for element in source:
        if element.tag.group != 0x7FE0:
            header.add(element)
    for keyword in _TYPE2_DEFAULTS:
        if keyword not in header:
            setattr(header, keyword, "")
    return header


def _source_reference(header: Dataset) -> Dataset:
    item = Dataset()
    item.ReferencedSOPClassUID = header.SOPClassUID
    item.ReferencedSOPInstanceUID = header.SOPInstanceUID
    return item


# --- Structured Report --------------------------------------------------------


def _private(code: str, meaning: str) -> hd.sr.CodedConcept:
    return hd.sr.CodedConcept(value=code, scheme_designator=PRIVATE_SCHEME, meaning=meaning)


PROBABILITY_OF_PNEUMONIA = _private("P-PNEUMONIA", "Probability of pneumonia")
OPERATING_THRESHOLD = _private("THRESHOLD", "Operating threshold")
PROBABILITY_VIRAL = _private("P-VIRAL", "Probability of viral cause given pneumonia")
PROBABILITY_SHOWN = _private("P-SHOWN", "Probability of pneumonia at site prevalence")
POPULATION_CHECK = _private("POPULATION", "Population check")
EVIDENCE_OUTSIDE_LUNGS = _private("OUTSIDE-LUNGS", "Share of the evidence outside the lung fields")
PNEUMONIA_CODE = hd.sr.CodedConcept(value="233604007", scheme_designator="SCT", meaning="Pneumonia")
PRESENCE = hd.sr.CodedConcept(value="705057003", scheme_designator="SCT", meaning="Presence")
FRACTION = codes.UCUM.NoUnits  # UCUM "1"


def _num(name: hd.sr.CodedConcept, value: float) -> hd.sr.NumContentItem:
    return hd.sr.NumContentItem(
        name=name,
        value=float(value),
        unit=FRACTION,
        relationship_type=hd.sr.RelationshipTypeValues.HAS_PROPERTIES,
    )


def _salient_region(header: Dataset, box: list[float]) -> hd.sr.ScoordContentItem | None:
    """The box as a closed polyline in the source's pixel coordinates, or None without Rows/Columns."""
    rows, columns = header.get("Rows"), header.get("Columns")
    if not rows or not columns:
        return None
    x0, y0, x1, y1 = (float(v) for v in box)
    corners = [(x0, y0), (x1, y0), (x1, y1), (x0, y1), (x0, y0)]
    region = hd.sr.ScoordContentItem(
        name=codes.DCM.ImageRegion,
        graphic_type=hd.sr.GraphicTypeValues.POLYLINE,
        graphic_data=np.array([(x * columns, y * rows) for x, y in corners], dtype=np.float32),
        relationship_type=hd.sr.RelationshipTypeValues.INFERRED_FROM,
    )
    region.ContentSequence = [hd.sr.SourceImageForRegion.from_source_image(header)]
    return region


def _finding_item(header: Dataset, finding: Finding) -> hd.sr.CodeContentItem:
    """Finding = Pneumonia, its presence, the numbers it was decided from, and where it came from."""
    if finding.label not in (PNEUMONIA, NORMAL):
        raise ValueError(f"finding label must be {PNEUMONIA} or {NORMAL}, not {finding.label!r}")
    presence = codes.SCT.Present if finding.label == PNEUMONIA else codes.SCT.Absent
    children: list[hd.sr.ContentItem] = [
        hd.sr.CodeContentItem(
            name=PRESENCE, value=presence, relationship_type=hd.sr.RelationshipTypeValues.HAS_PROPERTIES
        ),
        _num(PROBABILITY_OF_PNEUMONIA, finding.probability),
        _num(OPERATING_THRESHOLD, finding.threshold),
    ]
    if finding.viral_probability is not None:
        children.append(_num(PROBABILITY_VIRAL, finding.viral_probability))
    if finding.shown_probability is not None:
        children.append(_num(PROBABILITY_SHOWN, finding.shown_probability))
    if finding.evidence_outside_lungs is not None:
        children.append(_num(EVIDENCE_OUTSIDE_LUNGS, finding.evidence_outside_lungs))
    children.extend(hd.sr.AlgorithmIdentification(name=finding.model_name, version=finding.model_version))
    children.append(
        hd.sr.ImageContentItem(
            name=codes.DCM.SourceOfMeasurement,
            referenced_sop_class_uid=header.SOPClassUID,
            referenced_sop_instance_uid=header.SOPInstanceUID,
            relationship_type=hd.sr.RelationshipTypeValues.INFERRED_FROM,
        )
    )
    if finding.salient_box is not None:
        region = _salient_region(header, finding.salient_box)
        if region is not None:
            children.append(region)
    item = hd.sr.CodeContentItem(
        name=codes.DCM.Finding, value=PNEUMONIA_CODE, relationship_type=hd.sr.RelationshipTypeValues.CONTAINS
    )
    item.ContentSequence = children
    return item


def _text(name, value: str) -> hd.sr.TextContentItem:
    return hd.sr.TextContentItem(name=name, value=value, relationship_type=hd.sr.RelationshipTypeValues.CONTAINS)


def _content(header: Dataset, finding: Finding) -> hd.sr.ContainerContentItem:
    observer = hd.sr.ObserverContext(
        observer_type=codes.cid270.Device,
        observer_identifying_attributes=hd.sr.DeviceObserverIdentifyingAttributes(
            uid=_device_uid(finding.model_name, finding.model_version),
            name=finding.model_name,
            manufacturer_name=MANUFACTURER,
            model_name=finding.model_name,
        ),
    )
    children: list[hd.sr.ContentItem] = [*observer, _finding_item(header, finding)]
    if finding.population:
        verdict = finding.population + (f": {finding.population_reason}" if finding.population_reason else "")
        children.append(_text(POPULATION_CHECK, verdict))
    children.append(_text(codes.DCM.Comment, DISCLAIMER))
    root = hd.sr.ContainerContentItem(name=codes.LN.DiagnosticImagingReport)
    root.ContentSequence = children
    return root


def structured_report(source: Dataset, finding: Finding) -> hd.sr.ComprehensiveSR:
    """A Comprehensive SR of the finding, in the source's study, referencing the source instance.

    Unverified and preliminary: no person has read it. Its UIDs depend only on
    the source instance and the model version (see ``derived_uid``).
    """
    header = _header(source)
    uid = header.SOPInstanceUID
    return hd.sr.ComprehensiveSR(
        evidence=[header],
        content=_content(header, finding),
        series_instance_uid=derived_uid(uid, finding.model_version, "sr-series"),
        series_number=SR_SERIES_NUMBER,
        sop_instance_uid=derived_uid(uid, finding.model_version, "sr"),
        instance_number=1,
        manufacturer=MANUFACTURER,
        is_complete=True,
        is_final=False,
        is_verified=False,
        series_description=SR_SERIES_DESCRIPTION,
        manufacturer_model_name=finding.model_name,
        software_versions=finding.model_version,
        coding_schemes=[
            CodingSchemeIdentificationItem(
                designator=PRIVATE_SCHEME,
                name="Pneumonia screening result codes",
                responsible_organization=MANUFACTURER,
            )
        ],
    )


# --- heatmap Secondary Capture ------------------------------------------------


def blend_overlay(gray: np.ndarray, overlay_rgba_png: bytes) -> np.ndarray:
    """The grey radiograph with the heatmap PNG alpha-blended on top, as H x W x 3 uint8.

    The overlay (``ml.serving.heatmap.overlay_png``) is colour where the map
    is, with alpha up to 200 for its value and 255 for the box outline; it is
    made at 256 pixels on the long side, so it is stretched to the image.
    Where alpha is 0 the radiograph's grey comes through unchanged.
    """
    if gray.ndim != 2 or gray.dtype != np.uint8:
        raise ValueError(f"expected an H x W uint8 image, got {gray.dtype} {gray.shape}")
    height, width = gray.shape
    overlay = Image.open(io.BytesIO(overlay_rgba_png)).convert("RGBA")
    if overlay.size != (width, height):
        overlay = overlay.resize((width, height), Image.Resampling.BILINEAR)
    rgba = np.asarray(overlay, dtype=np.float32)
    alpha = rgba[..., 3:] / 255.0
    base = np.repeat(gray[..., None].astype(np.float32), 3, axis=-1)
    blended = base * (1.0 - alpha) + rgba[..., :3] * alpha
    return np.clip(np.rint(blended), 0, 255).astype(np.uint8)


def heatmap_capture(source: Dataset, image: np.ndarray, finding: Finding) -> hd.sc.SCImage:
    """An RGB Secondary Capture of ``image`` (from ``blend_overlay``) in the source's study, own series.

    Workstation-made (ConversionType WSD), derived from the source image
    (SourceImageSequence), the disclaimer in ImageComments since a viewer
    shows that next to the pixels.
    """
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise ValueError(f"expected an H x W x 3 uint8 image, got {image.dtype} {image.shape}")
    header = _header(source)
    uid = header.SOPInstanceUID
    capture = hd.sc.SCImage.from_ref_dataset(
        ref_dataset=header,
        pixel_array=image,
        photometric_interpretation=hd.PhotometricInterpretationValues.RGB,
        bits_allocated=8,
        coordinate_system=hd.CoordinateSystemNames.PATIENT,
        series_instance_uid=derived_uid(uid, finding.model_version, "sc-series"),
        series_number=SC_SERIES_NUMBER,
        sop_instance_uid=derived_uid(uid, finding.model_version, "sc"),
        instance_number=1,
        manufacturer=MANUFACTURER,
        # highdicom insists on an orientation; replaced below by the source's own (or empty, Type 2C).
        patient_orientation=("L", "F"),
        transfer_syntax_uid=ExplicitVRLittleEndian,
        series_description=SC_SERIES_DESCRIPTION,
        manufacturer_model_name=finding.model_name,
        software_versions=finding.model_version,
    )
    capture.copy_patient_and_study_information(header)
    same_geometry = (header.get("Rows"), header.get("Columns")) == image.shape[:2]
    capture.PatientOrientation = header.get("PatientOrientation", "") if same_geometry else ""
    capture.ConversionType = "WSD"
    capture.BurnedInAnnotation = "NO"
    capture.LossyImageCompression = "00"
    capture.ImageComments = DISCLAIMER
    capture.DerivationDescription = (
        f"Class-activation heatmap of {finding.model_name} {finding.model_version} "
        f"(label {finding.label}, P(pneumonia) {finding.probability:.3f}) blended onto the source image."
    )
    capture.SourceImageSequence = [_source_reference(header)]
    return capture
