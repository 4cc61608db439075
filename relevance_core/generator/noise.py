"""Malformed rows for the text landing formats: the bad input ingestion must quarantine, never drop.

Each bad line is a real event of the same day with one thing broken, so it looks like what a buggy client
or a truncated upload produces, and each kind maps to one quarantine reason. Lines never contain an
unbalanced quote or a newline, so one bad line is exactly one rejected row: the accounting identity
(rows in = accepted + quarantined) can be checked against the counts reported here.
"""

from __future__ import annotations

import json

import numpy as np

CSV_KINDS: tuple[str, ...] = (
    "bad_timestamp",
    "unknown_event_type",
    "empty_item_id",
    "wrong_column_count",
    "non_utf8",
)
JSONL_KINDS: tuple[str, ...] = (
    "bad_timestamp",
    "unknown_event_type",
    "empty_item_id",
    "broken_json",
    "non_utf8",
)

BAD_TIMESTAMPS = ("2026-13-45T25:61:00Z", "not-a-timestamp", "yesterday at noon", "20260105-12:00")
UNKNOWN_EVENT_TYPES = ("teleport", "page_scroll", "hover", "wishlist_share")
NON_UTF8 = b"\xff\xfe\xc3("


def _row_values(row: dict) -> list[str | None]:
    return [
        row["user_id"],
        row["session_id"],
        row["item_id"],
        row["event_type"],
        row["timestamp"],
        row["device_type"],
    ]


def csv_line(row: dict, kind: str, rng: np.random.Generator) -> bytes:
    """One broken CSV line (no trailing newline) from a valid event ``row`` (text timestamp)."""
    values = ["" if v is None else v for v in _row_values(row)]
    if kind == "bad_timestamp":
        values[4] = BAD_TIMESTAMPS[rng.integers(len(BAD_TIMESTAMPS))]
    elif kind == "unknown_event_type":
        values[3] = UNKNOWN_EVENT_TYPES[rng.integers(len(UNKNOWN_EVENT_TYPES))]
    elif kind == "empty_item_id":
        values[2] = ""
    elif kind == "wrong_column_count":
        values = values[:-2] if rng.random() < 0.5 else [*values, "extra"]
    elif kind == "non_utf8":
        return (
            ",".join(values[:2]).encode()
            + b","
            + values[2].encode()
            + NON_UTF8
            + b","
            + ",".join(values[3:]).encode()
        )
    else:
        raise ValueError(kind)
    return ",".join(values).encode()


def jsonl_line(row: dict, kind: str, rng: np.random.Generator) -> bytes:
    """One broken JSONL line (no trailing newline) from a valid event ``row`` (text timestamp)."""
    obj = dict(row)
    if kind == "bad_timestamp":
        obj["timestamp"] = BAD_TIMESTAMPS[rng.integers(len(BAD_TIMESTAMPS))]
    elif kind == "unknown_event_type":
        obj["event_type"] = UNKNOWN_EVENT_TYPES[rng.integers(len(UNKNOWN_EVENT_TYPES))]
    elif kind == "empty_item_id":
        if rng.random() < 0.5:
            obj["item_id"] = ""
        else:
            del obj["item_id"]
    elif kind == "broken_json":
        text = json.dumps(obj, separators=(",", ":"))
        return text[: max(len(text) // 2, 1)].encode()
    elif kind == "non_utf8":
        text = json.dumps({**obj, "item_id": "@@ITEM@@"}, separators=(",", ":"))
        return text.encode().replace(b"@@ITEM@@", str(row["item_id"]).encode() + NON_UTF8)
    else:
        raise ValueError(kind)
    return json.dumps(obj, separators=(",", ":")).encode()


def inject(body: bytes, line_starts: np.ndarray, bad_lines: list[bytes], rng: np.random.Generator) -> bytes:
    """Insert ``bad_lines`` at random line boundaries of ``body`` (``line_starts``: byte offset of each
    line plus the end), keeping every valid line intact."""
    if not bad_lines:
        return body
    n_lines = len(line_starts) - 1
    at = np.sort(rng.integers(0, n_lines + 1, size=len(bad_lines)))
    parts: list[bytes] = []
    prev = 0
    for pos, line in zip(at, bad_lines, strict=True):
        cut = int(line_starts[pos])
        parts.append(body[prev:cut])
        parts.append(line + b"\n")
        prev = cut
    parts.append(body[prev:])
    return b"".join(parts)
