"""What a check is (declared once) and what it found (with the evidence).

Every check is declared as a :class:`CheckSpec` next to the code that runs it: the asset it
guards, its name, whether a failure blocks publication (else it is a warning), its
threshold if it has one, and a description. The Dagster check specs derive from these
(``assets/gate.py``), so name, blocking, severity and description are stated in one place.

A check reads one pinned version (the candidate a run just wrote) and never modifies
anything; it returns a :class:`CheckOutcome`: passed or not, what it observed, what it
expected, and examples of offending values.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

#: How many offending values a check lists in its metadata.
MAX_EXAMPLES = 20


@dataclass(frozen=True)
class CheckSpec:
    """One check, declared once.

    Attributes:
        asset: The asset the check guards (``image_lance``...).
        name: The check's name (stable: it is the Dagster check name).
        blocking: Whether a failure must stop publication (else it is a warning).
        description: What the check asserts, in one sentence.
        threshold: The number the check compares against, when it has one.
    """

    asset: str
    name: str
    blocking: bool
    description: str
    threshold: float | None = None

    @property
    def severity(self) -> str:
        """``ERROR`` for a blocking check, ``WARN`` for a warning."""
        return "ERROR" if self.blocking else "WARN"

    def outcome(
        self, passed: bool, observed: Any, expected: str, details: dict[str, Any] | None = None
    ) -> CheckOutcome:
        """The result of running this check."""
        return CheckOutcome(self.name, passed, self.blocking, observed, expected, details or {})


@dataclass(frozen=True)
class CheckOutcome:
    """The result of one check, with the evidence.

    Attributes:
        name: Check name (the :class:`CheckSpec`'s).
        passed: Whether the data met the expectation.
        blocking: Whether a failure must stop publication (else it is a warning).
        observed: The measured value (a count, a schema...).
        expected: The expectation, in words.
        details: Examples of offending values and other evidence.
    """

    name: str
    passed: bool
    blocking: bool
    observed: Any
    expected: str
    details: dict[str, Any] = field(default_factory=dict)


def blocking_failures(outcomes: Iterable[CheckOutcome]) -> list[CheckOutcome]:
    """The failed blocking checks (empty means the candidate may be published)."""
    return [o for o in outcomes if o.blocking and not o.passed]


def duplicates(values: Sequence[Any]) -> dict[Any, int]:
    """Values that occur more than once, with their counts."""
    return {v: n for v, n in Counter(values).items() if n > 1}


def unique_key(spec: CheckSpec, ds: Any, key: str) -> CheckOutcome:
    """``spec`` run as "no ``key`` value appears twice in ``ds``"."""
    values = ds.to_table(columns=[key]).column(key).to_pylist()
    dups = duplicates(values)
    return spec.outcome(
        not dups,
        len(dups),
        f"0 duplicate {key} values among {len(values)} rows",
        {"duplicates": [{key: k, "rows": n} for k, n in list(dups.items())[:MAX_EXAMPLES]]},
    )
