"""How the benchmarks print latencies: the same percentile rule and layout everywhere."""

from __future__ import annotations

import statistics


def percentile(values: list[float], q: float) -> float:
    """The sample at rank ``q`` (nearest rank, no interpolation): a value that was really measured."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def p50_p95(samples_ms: list[float], width: int = 7, decimals: int = 1) -> str:
    """``p50 … ms   p95 … ms`` for a list of milliseconds."""
    p50, p95 = statistics.median(samples_ms), percentile(samples_ms, 0.95)
    return f"p50 {p50:{width}.{decimals}f} ms   p95 {p95:{width}.{decimals}f} ms"
