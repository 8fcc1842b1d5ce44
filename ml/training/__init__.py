"""Building models and the gate from the data: splits, augmentation, training, calibration fitting,
thresholds and cards. Imports ``ml.serving`` (the one preprocessing path), never the reverse."""
