"""Measuring models and the gate: metrics, evaluation reports and plots, candidate comparison,
gate rates, heatmap checks. Imports ``ml.serving`` and ``ml.training``; nothing imports it at serve time."""
