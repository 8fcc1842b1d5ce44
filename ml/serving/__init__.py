"""What a worker imports: decode, preprocess, the gate, the model, heatmaps, applied calibration, and
the chunk pipeline (``pipeline``) that joins them. Imports nothing from ``ml.training`` or
``ml.evaluation``, nor scipy, scikit-learn or matplotlib (``tests/ml/test_layout.py`` checks)."""
