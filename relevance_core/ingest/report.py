"""What one ingestion run did, in numbers a person (and an asset check) can act on.

The accounting identity is the contract of every ingestion run (docs/contracts.md)::

    rows_in = accepted + quarantined + duplicates_removed

* ``rows_in``: every data record read from the landing files. A CSV file's header line (and a line equal to
  it, e.g. two files concatenated) is not a record; a blank (whitespace-only) line carries no data and is
  counted in ``blank_lines`` instead. A Parquet row is one record.
* ``quarantined``: records refused with a reason (written to the quarantine table, one row each).
* ``duplicates_removed``: valid records that were exact copies of another valid record (events), or older
  versions of an item superseded by a newer snapshot (catalog). They are their own class, not quarantine:
  nothing is wrong with them, they are simply not new information.
* ``accepted``: rows written to the lake.

``check()`` raises when the identity does not hold, so a bug in the ingestion code cannot hide rows.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any


class AccountingError(AssertionError):
    """Rows went missing or were counted twice between landing and lake."""


@dataclass
class IngestReport:
    dataset: str
    partition: str | None
    source_prefix: str
    output_key: str
    quarantine_key: str
    rows_in: int = 0
    accepted: int = 0
    quarantined: int = 0
    duplicates_removed: int = 0
    reasons: dict[str, int] = field(default_factory=dict)
    files: list[str] = field(default_factory=list)
    skipped_files: list[str] = field(default_factory=list)
    header_lines: int = 0
    blank_lines: int = 0
    seconds: float = 0.0
    #: hash of the landing files' listing, taken before reading them (``fingerprint.py``); events only
    landing_fingerprint: str | None = None

    @property
    def quarantine_rate(self) -> float:
        """Quarantined share of the records read; 0 for an empty input (nothing went wrong)."""
        return self.quarantined / self.rows_in if self.rows_in else 0.0

    @property
    def empty(self) -> bool:
        return self.rows_in == 0

    def check(self) -> IngestReport:
        if self.rows_in != self.accepted + self.quarantined + self.duplicates_removed:
            raise AccountingError(
                f"{self.dataset} {self.partition or ''}: rows_in={self.rows_in} != accepted={self.accepted} "
                f"+ quarantined={self.quarantined} + duplicates_removed={self.duplicates_removed}"
            )
        if sum(self.reasons.values()) != self.quarantined:
            raise AccountingError(f"per-reason counts {self.reasons} do not add up to {self.quarantined}")
        return self

    def summary(self) -> str:
        where = f"{self.dataset}" + (f" {self.partition}" if self.partition else "")
        if self.empty:
            return f"{where}: landing {self.source_prefix} holds no records; wrote an empty {self.output_key}"
        reasons = ", ".join(f"{k}={v}" for k, v in sorted(self.reasons.items())) or "none"
        return (
            f"{where}: {self.rows_in} in = {self.accepted} accepted + {self.quarantined} quarantined "
            f"({self.quarantine_rate:.2%}; {reasons}) + {self.duplicates_removed} duplicates removed"
        )

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["quarantine_rate"] = self.quarantine_rate
        d["empty"] = self.empty
        return d
