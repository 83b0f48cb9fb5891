"""Bad input: errors that name the file, line and field, and counted skips."""

import logging
from collections import Counter
from dataclasses import dataclass, field

log = logging.getLogger("goalrm.data")


class BadRowError(ValueError):
    def __init__(self, path: str, line: int, field: str | None, reason: str):
        self.path, self.line, self.field, self.reason = path, line, field, reason
        where = f"field '{field}': " if field else ""
        super().__init__(f"{path}:{line}: {where}{reason}")

    def __reduce__(self):  # crosses Ray process boundaries intact
        return BadRowError, (self.path, self.line, self.field, self.reason)


@dataclass
class BadRows:
    """Rows skipped under `on_bad_row: skip`, each logged; nothing is dropped silently."""

    errors: list = field(default_factory=list)

    def add(self, err: BadRowError) -> None:
        self.errors.append(err)
        log.warning("skipping bad row: %s", err)

    @property
    def count(self) -> int:
        return len(self.errors)

    @property
    def by_reason(self) -> dict[str, int]:
        return dict(Counter(e.reason for e in self.errors))

    def summary(self) -> str:
        parts = ", ".join(f"{n} x {r}" for r, n in self.by_reason.items())
        return f"{self.count} bad rows skipped" + (f" ({parts})" if parts else "")


def handle(err: BadRowError, on_bad_row: str, bad_rows: BadRows | None) -> None:
    if on_bad_row == "error" or bad_rows is None:
        raise err
    bad_rows.add(err)


def check_on_bad_row(on_bad_row: str) -> None:
    if on_bad_row not in ("error", "skip"):
        raise ValueError(f"on_bad_row must be 'error' or 'skip', got {on_bad_row!r}")
