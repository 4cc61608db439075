"""A validation split carved from the END of the training sessions, for choosing hyper-parameters.

The test file is never looked at while choosing anything: the configuration in ``configs/`` was picked
on this split. It mirrors the benchmark's own protocol: the test set of these splits is the most recent
period, so the most recent training sessions are the closest stand-in; every validation session is
expanded into (prefix → next item) rows like the test file, and (as the published preprocessing does
for test) rows whose label never occurs in the remaining training sessions are dropped, because no
model can rank an item it has never seen and the test file was filtered the same way.
"""

from __future__ import annotations

from collections.abc import Sequence


def carve(sessions: Sequence[Sequence[str]], fraction: float) -> tuple[list[list[str]], list[list[str]]]:
    """(earlier sessions, the last ``fraction`` of them). At least one session stays on each side."""
    if not 0.0 < fraction < 1.0:
        raise ValueError("fraction must be in (0, 1)")
    n = len(sessions)
    n_val = min(max(1, round(n * fraction)), n - 1)
    return [list(s) for s in sessions[: n - n_val]], [list(s) for s in sessions[n - n_val :]]


def expand(
    sessions: Sequence[Sequence[str]], known_items: set[str] | None = None
) -> tuple[list[list[str]], list[str]]:
    """Every session of length n → rows (s[:i] → s[i]) for i = n-1 … 1, longest prefix first (the order
    the published test files use). Items unknown to training are dropped from each session first
    (the published preprocessing removes them before expanding); sessions left shorter than 2 give no row."""
    prefixes: list[list[str]] = []
    labels: list[str] = []
    for s in sessions:
        seq = [i for i in s if known_items is None or i in known_items]
        for i in range(len(seq) - 1, 0, -1):
            prefixes.append(list(seq[:i]))
            labels.append(seq[i])
    return prefixes, labels


def validation_split(
    sessions: Sequence[Sequence[str]], fraction: float
) -> tuple[list[list[str]], list[list[str]], list[str]]:
    """(training sessions, validation prefixes, validation labels) for hyper-parameter choice."""
    train, held = carve(sessions, fraction)
    known = {i for s in train for i in s}
    prefixes, labels = expand(held, known)
    return train, prefixes, labels
