"""The real-PACS harness itself: Orthanc accepts dcmtk's C-ECHO and C-STORE, and keeps what it stored."""

from __future__ import annotations

import io
from pathlib import Path

import pydicom
import pytest

from harness.dicom_peers import Orthanc, available, echoscu, storescu

MONO2 = Path(__file__).parent / "fixtures" / "bad" / "mono2.dcm"

pytestmark = [pytest.mark.e2e, pytest.mark.skipif(available() is not None, reason=available() or "")]


def test_orthanc_stores_and_survives_restart(tmp_path):
    header = pydicom.dcmread(MONO2, stop_before_pixels=True)
    study_uid, sop_uid = str(header.StudyInstanceUID), str(header.SOPInstanceUID)

    with Orthanc(tmp_path / "pacs", aet="TESTPACS") as pacs:
        echo = echoscu(pacs.dicom_port, aec=pacs.aet)
        assert echo.returncode == 0, echo.stderr

        stored = storescu(pacs.dicom_port, [MONO2], aec=pacs.aet)
        assert stored.returncode == 0, stored.stdout + stored.stderr

        [instance] = pacs.wait_for_instances(study_uid, 1)
        assert instance["SOPInstanceUID"] == sop_uid
        assert instance["SOPClassUID"] == str(header.SOPClassUID)
        assert instance["SeriesInstanceUID"] == str(header.SeriesInstanceUID)
        assert instance["Modality"] == header.Modality
        # Same dataset; the file meta header (group 0002) is rewritten by storescu/Orthanc.
        assert pydicom.dcmread(io.BytesIO(pacs.instance_file(instance["ID"]))) == pydicom.dcmread(MONO2)
        assert [i["ID"] for i in pacs.instances()] == [instance["ID"]]

        pacs.stop()
        refused = storescu(pacs.dicom_port, [MONO2], aec=pacs.aet)
        assert refused.returncode != 0, refused.stdout + refused.stderr

        pacs.start()
        assert [i["SOPInstanceUID"] for i in pacs.instances_in_study(study_uid)] == [sop_uid]
