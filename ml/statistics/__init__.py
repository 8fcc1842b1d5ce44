"""Statistics that training, evaluation and the service's own reports share: metrics and their intervals.

A leaf: it imports numpy and scipy only, so the web process can report a
site validation's figures without importing training or evaluation code.
"""
