"""Turn an uploaded file (JPEG, PNG or DICOM) into the 8-bit grey pixels we score.

Hospitals send whatever their systems export, so every branch here ends in one
of three places: a ``DecodedImage`` ready for ``ml.serving.preprocess.squash_to_input``,
``DecodeFailed`` (we could not read it) or ``InputRejected`` (we read it, but it
is not something the model was validated on). Library errors never escape:
the worker turns these two exceptions into a study status and shows ``.reason``
to hospital staff, so a reason never quotes file contents (which may carry
patient identifiers) and is written for a person, not a programmer.

This module must stay importable without Django.
"""

from __future__ import annotations

import io
import logging
import os
import re
import struct
import traceback
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import date, datetime

import numpy as np
import pydicom
import pydicom.config
import pydicom.errors
import pydicom.multival
from PIL import Image, ImageFile
from pydicom.pixels import apply_color_lut, apply_modality_lut, get_decoder

logger = logging.getLogger(__name__)

# pydicom's default (WARN) logs and warns about malformed values *quoting the
# value*, which may be a patient's name. We never validate values we do not
# use, so reading stays lenient and silent. ml.serving.decode is the service's only
# pydicom user, which makes this process-wide setting safe.
pydicom.config.settings.reading_validation_mode = pydicom.config.IGNORE

# A chest radiograph is at most ~4300x4300 16-bit (~37 MB uncompressed DICOM);
# anything much bigger is a mistake or an attack. The upload layer has its own,
# configurable limit; these are the decoder's own last line of defence.
DEFAULT_MAX_BYTES = 64 * 1024 * 1024
DEFAULT_MAX_PIXELS = 50_000_000

ACCEPTED_MODALITIES = frozenset({"CR", "DX"})
LATERAL_VIEWS = frozenset({"LL", "RL", "LAT", "LATERAL"})

# Reduced-size JPEG decoding keeps at least this multiple of the model's input
# size on each side; see ``_draft`` for the measurement behind it.
DRAFT_OVERSAMPLE = 1

# Stored alongside the study. Never PatientName/PatientID: the service does
# not need them and must not spread them.
DICOM_ATTRIBUTES = (
    "StudyInstanceUID",
    "SeriesInstanceUID",
    "SOPInstanceUID",
    "AccessionNumber",
    "Modality",
    "ViewPosition",
    "BodyPartExamined",
    "PatientAge",
    "PatientSex",
    "Manufacturer",
    "StudyDate",
)
# Read for the population verdict (age at the study when PatientAge is
# absent) and then dropped: never stored, logged or shown.
DICOM_TRANSIENT_ATTRIBUTES = ("PatientBirthDate",)

_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_JPEG_SIGNATURE = b"\xff\xd8\xff"
# Keyed by pydicom's original_encoding, whose parts may be None (unknown): no entry then, a KeyError as for any other.
_UNCOMPRESSED_SYNTAX: dict[tuple[bool | None, bool | None], pydicom.uid.UID] = {
    (True, True): pydicom.uid.ImplicitVRLittleEndian,
    (False, True): pydicom.uid.ExplicitVRLittleEndian,
    (False, False): pydicom.uid.ExplicitVRBigEndian,
}
_PIXEL_DATA_KEYWORDS = ("PixelData", "FloatPixelData", "DoubleFloatPixelData")
# Explicit-VR elements whose length field is 4 bytes after 2 reserved bytes.
_LONG_VRS = frozenset({b"OB", b"OD", b"OF", b"OL", b"OV", b"OW", b"SQ", b"SV", b"UC", b"UN", b"UR", b"UT", b"UV"})


class UnscorableInput(Exception):
    """The file was accepted but cannot be scored; ``.reason`` is shown to hospital staff."""

    status: str = "FAILED"

    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


class DecodeFailed(UnscorableInput):
    """Truncated, corrupt, too large, no pixel data, or a compression we cannot decode."""

    status = "FAILED"


class InputRejected(UnscorableInput):
    """Readable, but not a frontal chest radiograph as far as the file itself says."""

    status = "REJECTED"


@dataclass(frozen=True)
class DecodedImage:
    """Display-ready grey pixels plus what the file says about itself.

    ``width``/``height`` describe the original image upright (after EXIF
    orientation); ``pixels`` may be smaller when ``decode`` was given a
    ``target_size`` and could decode at reduced size.
    """

    pixels: np.ndarray
    format: str
    width: int
    height: int
    attributes: dict[str, str] = field(default_factory=dict)
    # Pillow's mode of the file as stored, before any conversion ("L", "RGB", "I;16", ...); "" for DICOM.
    source_mode: str = ""


def sniff_format(head: bytes) -> str | None:
    """Name the container by its first bytes; extensions lie and browsers guess.

    ``head`` should be the first 1 KiB or so. ``None`` means "neither image nor
    DICOM": the upload layer refuses such files before any study exists.
    """
    if head.startswith(_JPEG_SIGNATURE):
        return "jpeg"
    if head.startswith(_PNG_SIGNATURE):
        return "png"
    if head[128:132] == b"DICM" or _looks_like_headerless_dicom(head):
        return "dicom"
    return None


def decode(
    source: bytes | str | os.PathLike,
    *,
    target_size: int | None = None,
    max_bytes: int = DEFAULT_MAX_BYTES,
    max_pixels: int = DEFAULT_MAX_PIXELS,
) -> DecodedImage:
    """Decode ``source`` to a ``DecodedImage`` or raise ``UnscorableInput``.

    A path that cannot be opened raises the usual ``OSError`` (see ``_read_limited``).

    ``target_size`` lets JPEG decoding skip detail the model never sees (DCT
    scaling in libjpeg, several times faster); the result is never smaller
    than ``target_size`` on either side.
    """
    if ImageFile.LOAD_TRUNCATED_IMAGES:
        # Someone flipped Pillow's global switch: a truncated X-ray would then
        # be scored with a grey bottom half. A programming error, so not wrapped.
        raise RuntimeError("PIL.ImageFile.LOAD_TRUNCATED_IMAGES must stay False for ml.serving.decode")
    data = _read_limited(source, max_bytes)
    kind = sniff_format(data[:1024])
    if kind is None:
        raise DecodeFailed("The file is not a JPEG, PNG or DICOM image.")
    try:
        if kind == "dicom":
            return _decode_dicom(data, max_pixels)
        return _decode_pillow(data, kind, target_size, max_pixels)
    except UnscorableInput:
        raise
    except MemoryError as exc:
        raise DecodeFailed("The image is too large to process.") from exc
    except Exception as exc:
        # Pillow, pydicom and numpy raise a zoo of types (OSError, SyntaxError,
        # ValueError, struct.error, zlib.error, KeyError, ...) for damaged files.
        # Their messages may quote header values, so only the type is logged.
        logger.warning("decoding a %s file failed with %s at %s", kind, type(exc).__name__, _where(exc))
        raise DecodeFailed(_CORRUPT_REASON[kind]) from exc


def _where(exc: BaseException) -> str:
    """File and line an exception came from: enough to debug, no file contents."""
    frames = traceback.extract_tb(exc.__traceback__)
    return f"{os.path.basename(frames[-1].filename)}:{frames[-1].lineno}" if frames else "?"


_CORRUPT_REASON = {
    "jpeg": "The JPEG file is truncated or damaged and cannot be read.",
    "png": "The PNG file is truncated or damaged and cannot be read.",
    "dicom": "The DICOM file is truncated or damaged and cannot be read.",
}


def _read_limited(source: bytes | str | os.PathLike, max_bytes: int) -> bytes:
    """Read the whole file, refusing before reading when it is over ``max_bytes``.

    ``OSError`` (a missing or unreadable stored file) is not wrapped: that is
    the storage's fault, not the upload's, and the caller may retry it.
    """
    if isinstance(source, (bytes, bytearray, memoryview)):
        data = bytes(source)
    else:
        if os.stat(source).st_size > max_bytes:
            raise DecodeFailed(_too_big_reason(max_bytes))
        with open(source, "rb") as f:
            data = f.read(max_bytes + 1)
    if len(data) > max_bytes:
        raise DecodeFailed(_too_big_reason(max_bytes))
    if not data:
        raise DecodeFailed("The file is empty.")
    return data


def _too_big_reason(max_bytes: int) -> str:
    return f"The file is larger than the {max_bytes // (1024 * 1024)} MB limit."


# --- JPEG and PNG -----------------------------------------------------------


def _decode_pillow(data: bytes, kind: str, target_size: int | None, max_pixels: int) -> DecodedImage:
    with warnings.catch_warnings():
        # Pillow only warns between MAX_IMAGE_PIXELS and twice that; a warning
        # is as much a bomb to us as the error above it. (catch_warnings is
        # process-wide; workers decode one file at a time per process.)
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        try:
            image: Image.Image = Image.open(io.BytesIO(data), formats=[kind.upper()])
        except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
            raise DecodeFailed(_bomb_reason(max_pixels)) from exc
        with image:
            _check_pixel_count(image.size, max_pixels)  # header only: nothing decoded yet
            width, height = image.size  # before draft mode shrinks it
            source_mode = image.mode  # before draft mode turns colour into luma
            if target_size and kind == "jpeg":
                _draft(image, target_size)
            image.load()
            # Only after load(): PNG may keep EXIF after the image data, and
            # Pillow does not raise twice for a load that already failed.
            orientation = _exif_orientation(image)
            if orientation in _SWAPS_AXES:
                width, height = height, width
            if orientation in _TRANSPOSE_FOR_ORIENTATION:
                image = image.transpose(_TRANSPOSE_FOR_ORIENTATION[orientation])
            pixels = _to_gray8(image)
    return DecodedImage(pixels=pixels, format=kind, width=width, height=height, attributes={}, source_mode=source_mode)


def _check_pixel_count(size: tuple[int, int], max_pixels: int) -> None:
    width, height = size
    if width <= 0 or height <= 0:
        raise DecodeFailed("The image has no pixels.")
    if width * height > max_pixels:
        raise DecodeFailed(_bomb_reason(max_pixels))


def _bomb_reason(max_pixels: int) -> str:
    return f"The image is larger than the {max_pixels // 1_000_000} megapixel limit and was not opened."


# EXIF orientation -> the transpose that shows the image upright (as ImageOps.exif_transpose).
_TRANSPOSE_FOR_ORIENTATION = {
    2: Image.Transpose.FLIP_LEFT_RIGHT,
    3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_270,
    7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_90,
}
_SWAPS_AXES = frozenset({5, 6, 7, 8})


def _exif_orientation(image: Image.Image) -> int:
    """The EXIF orientation, or 1 (upright) when the EXIF block is missing or unreadable.

    A mangled EXIF block says nothing about the pixels, which may be fine;
    failing the study over it would be worse than showing it unrotated.
    """
    try:
        return int(image.getexif().get(0x0112, 1))
    except Exception as exc:
        logger.info("ignoring unreadable EXIF (%s)", type(exc).__name__)
        return 1


def _draft(image: Image.Image, target_size: int) -> None:
    """Ask libjpeg for the smallest 1/2, 1/4 or 1/8 scale decode that still covers ``target_size``.

    Pillow picks the largest reduction whose result is at least the requested
    size on both sides; our antialiased squash does the rest. libjpeg's DCT
    scaling is a different low-pass filter from that squash, so the input
    moves by a few grey levels, and the model's probability with it: model v5
    against a full decode, on the 12 originals in shared/data as they are,
    moved by at most 0.0065 at ``DRAFT_OVERSAMPLE`` 1 and 0.0011 at 2, and on
    them enlarged to detector size (``bench.score_drift draft``) by 0.0018 at
    1 and 0.0047 at 2, no label changed. At 1, decoding and squashing a chunk
    of 32 originals took 135-139 ms against 170-172 ms at 2 (``bench.chunk``
    on one thread), the largest cost of a study (issue 14). Grey comes
    straight from the luma channel for colour JPEGs, which is what
    ``convert("L")`` computes anyway.
    """
    mode = "L" if image.mode in ("L", "RGB") else image.mode
    requested = target_size * DRAFT_OVERSAMPLE
    image.draft(mode, (requested, requested))


def _to_gray8(image: Image.Image) -> np.ndarray:
    """Reduce any Pillow mode to (H, W) uint8 grey."""
    mode = image.mode
    if mode in ("I;16", "I;16B", "I;16L", "I;16N", "I", "F"):
        return _scale_high_bit_depth(np.asarray(image))
    if mode in ("P", "PA"):
        image = image.convert("RGBA")
        mode = "RGBA"
    if mode in ("RGBA", "LA", "RGBa", "La"):
        return _composite_on_black(image)
    if mode not in ("L", "RGB", "1"):
        image = image.convert("RGB")  # CMYK (Pillow undoes Adobe's inverted CMYK), YCbCr, ...
    return np.array(image.convert("L") if image.mode != "L" else image, dtype=np.uint8)


def _composite_on_black(image: Image.Image) -> np.ndarray:
    """Flatten transparency onto black.

    Exports of radiographs are opaque, where this equals dropping alpha; when
    they are not, transparent pixels have no intended intensity (their colour
    values are often left-over garbage), and black is "no signal" in the
    MONOCHROME2 convention, the colour of air and of padding around a film.
    """
    rgba = image.convert("RGBA")
    grey = np.asarray(rgba.convert("RGB").convert("L"), dtype=np.float32)
    alpha = np.asarray(rgba.getchannel("A"), dtype=np.float32) / 255.0
    return np.rint(grey * alpha).astype(np.uint8)


def _scale_high_bit_depth(values: np.ndarray) -> np.ndarray:
    """Map 16-bit (or 32-bit) grey to 8 bits through the bit depth the data uses.

    Exporters put 10-, 12- and 16-bit data in 16-bit containers; dividing by
    257 would leave 12-bit images nearly black, while stretching min..max would
    change contrast and so the score. Scaling from [0, 2**n - 1], n being the
    fewest bits (at least 8) that hold the brightest pixel, does neither: a
    16-bit export of an 8-bit image (v * 257) comes back exactly as v.

    The scaling is per value, so 16-bit pixels are looked up (``_per_value``):
    on a 2,500 x 3,000 16-bit PNG the float passes took 83 ms of a 223 ms
    decode, the lookup 21 ms; ``bench.score_drift lookup`` times whole
    decodes (issue 14).
    """
    low = min(float(values.min()), 0.0)  # only mode I/F can go negative
    top = float(values.max()) - low
    bits = max(8, int(np.ceil(np.log2(top + 1.0)))) if top > 0 else 8

    def scale(levels: np.ndarray) -> np.ndarray:
        scaled = (levels.astype(np.float64) - low) * (255.0 / (2.0**bits - 1.0))
        return np.clip(np.rint(scaled), 0, 255).astype(np.uint8)

    return _per_value(values, scale)


def _per_value(values: np.ndarray, transform) -> np.ndarray:
    """``transform(values)``, for 8- or 16-bit integer pixels computed once per possible value and looked up.

    Exact for any ``transform`` that acts on each value alone: a table over
    the type's 256 or 65,536 values replaces float passes over millions of
    pixels with one lookup. The table is indexed by each pixel's bytes, and
    level ``i`` is those bytes read as the pixels' own type, so signed and
    big-endian pixels find their entry too. Wider and float pixels are
    transformed as they are.
    """
    if values.dtype.kind not in "iu" or values.dtype.itemsize > 2:
        return transform(values)
    unsigned = np.dtype(f"u{values.dtype.itemsize}")
    levels = np.arange(2 ** (8 * values.dtype.itemsize), dtype=unsigned).view(values.dtype)
    return np.take(transform(levels), values.view(unsigned))


# --- DICOM -------------------------------------------------------------------


def _decode_dicom(data: bytes, max_pixels: int) -> DecodedImage:
    dataset = _read_dicom(data)
    attributes = _dicom_attributes(dataset)
    _check_is_frontal_radiograph(attributes)
    if not any(keyword in dataset for keyword in _PIXEL_DATA_KEYWORDS):
        raise DecodeFailed("The DICOM file contains no image (it has no pixel data).")
    rows, columns = int(dataset.get("Rows", 0) or 0), int(dataset.get("Columns", 0) or 0)
    _check_pixel_count((columns, rows), max_pixels)
    _check_transfer_syntax(dataset)

    dataset.pixel_array_options(index=0)  # first frame only; radiographs have one
    stored = dataset.pixel_array
    pixels = _dicom_to_gray8(stored, dataset)
    return DecodedImage(pixels=pixels, format="dicom", width=columns, height=rows, attributes=attributes)


def _read_dicom(data: bytes) -> pydicom.Dataset:
    has_preamble = data[128:132] == b"DICM"
    try:
        dataset = pydicom.dcmread(io.BytesIO(data), force=not has_preamble)
    except (pydicom.errors.InvalidDicomError, EOFError, struct.error, ValueError, KeyError, OSError) as exc:
        logger.warning("reading a DICOM header failed with %s", type(exc).__name__)
        raise DecodeFailed(_CORRUPT_REASON["dicom"]) from exc
    if "TransferSyntaxUID" not in dataset.file_meta:
        # Files without file meta do not name their encoding; pydicom worked
        # it out while reading, and the pixel decoders need it spelled out.
        implicit, little = dataset.original_encoding
        dataset.file_meta.TransferSyntaxUID = _UNCOMPRESSED_SYNTAX[(implicit, little)]
    return dataset


def dicom_date(value: str) -> date | None:
    """A DICOM DA value (YYYYMMDD) as a date; anything else (empty, a range, a typo) as unknown."""
    text = value.strip()
    try:
        return datetime.strptime(text, "%Y%m%d").date() if len(text) == 8 and text.isdigit() else None
    except ValueError:
        return None


def _dicom_attributes(dataset: pydicom.Dataset) -> dict[str, str]:
    attributes = {}
    for keyword in DICOM_ATTRIBUTES + DICOM_TRANSIENT_ATTRIBUTES:
        value = dataset.get(keyword)
        if value is not None and str(value).strip():
            attributes[keyword] = str(value).strip()
    return attributes


def _check_is_frontal_radiograph(attributes: dict[str, str]) -> None:
    """Reject what the header itself says is not a frontal chest radiograph.

    Cheap and certain, so it runs before any pixel is decoded. An absent tag
    proves nothing and is left to the image-based out-of-distribution gate.
    """
    modality = attributes.get("Modality", "").upper()
    if modality and modality not in ACCEPTED_MODALITIES:
        # A Code String is at most 16 of [A-Z0-9 _]; anything else is not echoed.
        shown = modality if re.fullmatch(r"[A-Z0-9_ ]{1,16}", modality) else "non-radiograph"
        article = "an" if shown[0] in "AEFHILMNORSX" else "a"
        raise InputRejected(f"This is {article} {shown} image; the service screens chest radiographs (CR/DX) only.")
    view = attributes.get("ViewPosition", "").upper()
    if view in LATERAL_VIEWS:
        raise InputRejected("This is a lateral view; the service screens frontal (PA or AP) chest radiographs only.")


def _check_transfer_syntax(dataset: pydicom.Dataset) -> None:
    """Name the compression in the message when no installed plugin can decode it."""
    syntax = dataset.file_meta.TransferSyntaxUID
    if not syntax.is_transfer_syntax:  # a private or mistyped UID: never echoed
        raise DecodeFailed("The DICOM image uses an unknown transfer syntax, which this service cannot decode.")
    if not syntax.is_compressed:
        return
    try:
        available = get_decoder(syntax).is_available
    except NotImplementedError:
        available = False
    if not available:
        raise DecodeFailed(f"The DICOM image is compressed with {syntax.name}, which this service cannot decode.")


def _dicom_to_gray8(stored: np.ndarray, dataset: pydicom.Dataset) -> np.ndarray:
    """Apply what a DICOM viewer applies before showing the image, in the standard's order.

    Modality LUT (rescale slope/intercept), then the VOI LUT or window the
    modality chose for display, then MONOCHROME1 inversion (for those files the
    lowest value is white *after* the VOI transform, PS3.3 C.7.6.3.1.2).
    """
    photometric = str(dataset.get("PhotometricInterpretation", "MONOCHROME2")).upper()
    if photometric == "PALETTE COLOR":
        stored = apply_color_lut(stored, dataset)
    if stored.ndim == 3:
        # Colour is not what CR/DX produce, but secondary captures of films
        # are; pydicom has already turned YBR into RGB.
        luma = stored[..., :3].astype(np.float64) @ np.array([0.299, 0.587, 0.114])
        return _scale_high_bit_depth(luma)
    if photometric not in ("MONOCHROME1", "MONOCHROME2"):
        raise DecodeFailed("The DICOM image uses a colour encoding this service does not support.")

    if dataset.get("ModalityLUTSequence"):
        return _gray8(apply_modality_lut(stored, dataset), dataset, photometric)
    return _tabulated_gray8(stored, dataset, photometric)


def _gray8(values: np.ndarray, dataset: pydicom.Dataset, photometric: str, extremes=None) -> np.ndarray:
    """Modality values to display grey: the VOI transform, then MONOCHROME1 inversion."""
    grey = _apply_display_transform(values, dataset, extremes)
    if photometric == "MONOCHROME1":
        grey = 255.0 - grey
    return np.rint(grey).astype(np.uint8)  # already within [0, 255]


def _tabulated_gray8(stored: np.ndarray, dataset: pydicom.Dataset, photometric: str) -> np.ndarray:
    """``_gray8`` of the stored pixels, looked up per value where they are 8- or 16-bit integers (``_per_value``).

    Every step is per value (rescale, window or VOI LUT, inversion,
    rounding), so a table over the stored type's 256 or 65,536 values gives
    exactly the per-pixel result. Only stretching without a window needs the
    image's own extremes; a rescale keeps them at the rescaled lowest and
    highest stored values (a Modality LUT Sequence might not, so such files
    do not come here). The per-pixel way makes several float passes
    over millions of pixels: on the 12 originals enlarged to detector size
    as 12-bit DICOM, decoding and squashing took a median 55 ms per pixel
    and 36 ms looked up with a rescale and a window, 75 and 35 ms with a VOI
    LUT, 39 and 35 ms with a window alone, with identical pixels in every
    case (``bench.score_drift lookup``, issue 14).
    """

    def extremes() -> np.ndarray:  # asked for only when there is no window to apply
        return apply_modality_lut(np.array([stored.min(), stored.max()], dtype=stored.dtype), dataset)

    return _per_value(
        stored, lambda levels: _gray8(apply_modality_lut(levels, dataset), dataset, photometric, extremes)
    )


def _apply_display_transform(
    values: np.ndarray, dataset: pydicom.Dataset, extremes: Callable[[], np.ndarray] | None = None
) -> np.ndarray:
    """Float grey in [0, 255]: VOI LUT if present, else the window, else min..max of ``extremes()`` or ``values``."""
    if dataset.get("VOILUTSequence"):
        try:
            return _apply_voi_lut_sequence(values, dataset.VOILUTSequence[0], dataset)
        except (ValueError, TypeError, IndexError, AttributeError, KeyError, struct.error) as exc:
            logger.info("ignoring an unusable VOI LUT (%s)", type(exc).__name__)
    if "WindowCenter" in dataset and "WindowWidth" in dataset:
        try:
            return _apply_window(values, dataset)
        except (ValueError, TypeError, IndexError, AttributeError, KeyError) as exc:
            logger.info("ignoring an unusable window (%s)", type(exc).__name__)
    return _stretch(values, values if extremes is None else extremes())


def _apply_window(values: np.ndarray, dataset: pydicom.Dataset) -> np.ndarray:
    """The first window of the file (PS3.3 C.11.2.1.2), mapped straight onto 0..255.

    Same formulas as pydicom's ``apply_windowing``, which maps onto the stored
    value range that we would then have to map onto 0..255 again; doing it in
    one float32 pass is 5-10x faster on a 2k x 2k radiograph.
    """
    center = float(_first(dataset.WindowCenter))
    width = float(_first(dataset.WindowWidth))
    function = str(dataset.get("VOILUTFunction") or "LINEAR").upper()
    grey = values.astype(np.float32)
    if function == "SIGMOID":
        if width <= 0:
            raise ValueError("SIGMOID window width must be positive")
        return 255.0 / (1.0 + np.exp(-4.0 * (grey - center) / width))
    if function == "LINEAR":
        if width < 1:
            raise ValueError("LINEAR window width must be at least 1")
        low, span = center - 0.5 - (width - 1) / 2, width - 1
    elif function == "LINEAR_EXACT":
        if width <= 0:
            raise ValueError("LINEAR_EXACT window width must be positive")
        low, span = center - width / 2, width
    else:
        raise ValueError("unknown VOI LUT function")
    if span == 0:  # a width-1 LINEAR window is a threshold
        return np.where(grey > low, np.float32(255), np.float32(0))
    grey -= low
    grey *= 255.0 / span
    return np.clip(grey, 0.0, 255.0, out=grey)


def _first(value):
    """Window Center/Width may hold several alternatives (VM 1-n); the first is the default."""
    return value[0] if isinstance(value, (list, tuple, pydicom.multival.MultiValue)) else value


def _apply_voi_lut_sequence(values: np.ndarray, item: pydicom.Dataset, dataset: pydicom.Dataset) -> np.ndarray:
    """Look values up in the first VOI LUT and scale its output range to 0..255.

    Done here rather than with pydicom's ``apply_voi``: pydicom 3.0.2 builds
    its index array in the LUT's *output* type, so an 8-bit LUT with more than
    256 entries (common for 12-bit CR) is indexed modulo 256 and the image
    comes out scrambled.
    """
    entries, first_mapped, bits = (int(v) for v in item.LUTDescriptor)
    entries = entries or 65536  # PS3.3 C.11.2.1.1: 0 means 2**16
    element = item["LUTData"]
    if element.VR == "OW" or isinstance(element.value, (bytes, bytearray)):
        order = "<" if dataset.file_meta.TransferSyntaxUID.is_little_endian else ">"
        table = np.frombuffer(element.value, dtype=f"{order}u2", count=entries)
    else:
        table = np.asarray(element.value, dtype=np.float64)[:entries]
    if table.size != entries:
        raise ValueError("VOI LUT data shorter than its descriptor")
    # A LUT is indexed by integers; a rescale may have produced floats.
    if values.dtype.kind not in "iu":
        values = np.rint(values)
    indices = np.clip(values.astype(np.int64) - first_mapped, 0, entries - 1)
    return _scale_to(table[indices], 0.0, max(float(2**bits - 1), float(table.max())))


def _scale_to(values: np.ndarray, low: float, high: float) -> np.ndarray:
    if high <= low:
        return np.zeros(values.shape, dtype=np.float32)
    grey = values.astype(np.float32)
    grey -= low
    grey *= 255.0 / (high - low)
    return np.clip(grey, 0.0, 255.0, out=grey)


def _stretch(values: np.ndarray, extremes: np.ndarray) -> np.ndarray:
    """Min..max of ``extremes`` to 0..255: what viewers show when the file names no window."""
    return _scale_to(values, float(np.min(extremes)), float(np.max(extremes)))


def _looks_like_headerless_dicom(head: bytes) -> bool:
    """Recognise DICOM written without the 128-byte preamble and "DICM" marker.

    Older modalities and some exporters write the data set straight away. We
    accept it only when the first three elements parse as group 0002 or 0008
    tags in ascending order, in explicit or implicit VR little endian: random
    or text bytes essentially never do that.
    """
    return _walk_elements(head, explicit=True) or _walk_elements(head, explicit=False)


def _walk_elements(head: bytes, *, explicit: bool, needed: int = 3) -> bool:
    offset, previous = 0, -1
    for _ in range(needed):
        if offset + 8 > len(head):
            return False
        group, element = struct.unpack_from("<HH", head, offset)
        tag = (group << 16) | element
        if group not in (0x0002, 0x0008) or tag <= previous:
            return False
        if explicit:
            vr = head[offset + 4 : offset + 6]
            if not (vr.isalpha() and vr.isupper()):
                return False
            if vr in _LONG_VRS:
                if offset + 12 > len(head):
                    return False
                length = struct.unpack_from("<I", head, offset + 8)[0]
                offset += 12
            else:
                length = struct.unpack_from("<H", head, offset + 6)[0]
                offset += 8
        else:
            length = struct.unpack_from("<I", head, offset + 4)[0]
            offset += 8
        if length == 0xFFFFFFFF or length > 1024:
            return False
        offset += length
        previous = tag
    return True
