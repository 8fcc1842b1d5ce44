"""The dependency rule of ``ml/``: serving stands alone, so a worker carries no training code."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
FORBIDDEN = ("sklearn", "scipy", "matplotlib", "ml.training", "ml.evaluation", "django")


@pytest.mark.e2e
def test_importing_serving_pulls_in_no_training_evaluation_or_heavy_science():
    code = (
        "import json, sys, pkgutil, importlib, ml.serving\n"
        "for m in pkgutil.iter_modules(ml.serving.__path__): importlib.import_module('ml.serving.' + m.name)\n"
        "print(json.dumps(sorted(sys.modules)))"
    )
    loaded = json.loads(
        subprocess.run([sys.executable, "-c", code], cwd=REPO, check=True, capture_output=True, text=True).stdout
    )
    offending = [m for m in loaded if m.split(".")[0] in FORBIDDEN or m.startswith(FORBIDDEN)]
    assert offending == []


@pytest.mark.e2e
def test_the_rule_would_catch_a_training_import():
    """The check above is not vacuous: importing training does pull these in."""
    code = "import json, sys, ml.training.calibration; print(json.dumps(sorted(sys.modules)))"
    loaded = json.loads(
        subprocess.run([sys.executable, "-c", code], cwd=REPO, check=True, capture_output=True, text=True).stdout
    )
    assert "scipy" in loaded
    assert "ml.training.calibration" in loaded
