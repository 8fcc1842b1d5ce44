"""The service as a DICOM node: receiving images, sending results back to PACS.

``nodes`` parses who may call and where results go, ``receiver`` takes one
instance into the same intake as an upload, ``listener`` is the C-STORE SCP,
``objects`` builds the report and heatmap objects, and ``outbox`` sends them.
"""
