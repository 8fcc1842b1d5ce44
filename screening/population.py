"""The population verdict on the Django side: what submitters declare, and the served card's range.

The decision itself is ``ml.serving.population.decide`` (no Django, so the
benchmarks and evaluation can call it); this module turns form, API and
command-line values into a ``Declaration`` and reads the validated age range
from the served model's card.
"""

from __future__ import annotations

from dataclasses import dataclass

from ml.serving.population import AgeRange, parse_declared_age
from screening.models import DeclaredPopulation

# Kermany et al. 2018: children aged one to five. Cards from before the
# population block (v1, v3) were trained on the same data.
DEFAULT_RANGE = AgeRange(1, 5)


class InvalidDeclaration(ValueError):
    """A declared group or age that is not one; the message is for the submitter."""


@dataclass(frozen=True)
class Declaration:
    group: str = DeclaredPopulation.NOT_DECLARED
    age_years: float | None = None

    @classmethod
    def parse(cls, group=None, age=None) -> Declaration:
        """From raw form, API or command-line values; ``InvalidDeclaration`` says what is wrong."""
        group = (group or "").strip().lower()
        if group not in DeclaredPopulation.values:
            choices = ", ".join(v for v in DeclaredPopulation.values if v)
            raise InvalidDeclaration(f"The declared population {group[:40]!r} is not one of: {choices}.")
        try:
            years = parse_declared_age(age)
        except ValueError as exc:
            raise InvalidDeclaration(str(exc)) from None
        return cls(group, years)

    def as_fields(self) -> dict:
        return {"declared_population": self.group, "declared_age_years": self.age_years}

    def __bool__(self) -> bool:
        return bool(self.group) or self.age_years is not None


def validated_range(card: dict) -> AgeRange:
    """The card's ``population.age_years``, or the training data's range for older cards."""
    block = card.get("population")
    ages = block.get("age_years") if isinstance(block, dict) else None
    if isinstance(ages, list) and len(ages) == 2 and all(isinstance(a, int) for a in ages):
        return AgeRange(ages[0], ages[1])
    return DEFAULT_RANGE


def population_summary(card: dict, fallback: str) -> str:
    """The one-line description of the validated population that banners and exports show."""
    block = card.get("population")
    if isinstance(block, dict):
        return str(block.get("summary") or fallback)
    return str(block or fallback)
