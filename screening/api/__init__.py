"""What other systems call: the JSON API (v1) and its tokens, DICOMweb STOW-RS, results as DICOM and FHIR."""
