"""How the benchmarks print latencies: the same percentile rule and layout everywhere."""

from __future__ import annotations

import os
import platform
import statistics
from pathlib import Path


def percentile(values: list[float], q: float) -> float:
    """The sample at rank ``q`` (nearest rank, no interpolation): a value that was really measured."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def p50_p95(samples_ms: list[float], width: int = 7, decimals: int = 1) -> str:
    """``p50 … ms   p95 … ms`` for a list of milliseconds."""
    p50, p95 = statistics.median(samples_ms), percentile(samples_ms, 0.95)
    return f"p50 {p50:{width}.{decimals}f} ms   p95 {p95:{width}.{decimals}f} ms"


def machine() -> str:
    """What a figure was measured on, as ``2 CPUs (AMD EPYC; AVX2)``.

    The same code runs at very different speeds on two 2-core machines (the
    model alone: 700-735 studies/s on one Intel Xeon, 1,076-1,246 on
    another, 187-289 on an AMD EPYC), so every benchmark names the processor
    beside its figures, with the widest vector units TensorFlow's CPU
    kernels can use: cloud processors often share one masked name.
    """
    name, flags = "", set()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name") and not name:
                name = line.split(":", 1)[1].strip()
            elif line.startswith("flags") and not flags:
                flags = set(line.split(":", 1)[1].split())
    except OSError:
        pass
    name = name or platform.processor() or "processor unknown"
    units = [label for flag, label in (("avx512f", "AVX-512"), ("amx_tile", "AMX")) if flag in flags]
    if not units and "avx2" in flags:
        units = ["AVX2"]
    return f"{os.cpu_count()} CPUs ({name}{'; ' + ', '.join(units) if units else ''})"
