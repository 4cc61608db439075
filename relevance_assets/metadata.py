"""Metadata helpers shared by the assets: pictures the Dagster UI shows inline."""

from __future__ import annotations

import base64
from pathlib import Path

import dagster as dg


def png_markdown(path: Path, title: str) -> dg.MetadataValue:
    """A PNG embedded as a data URI in Markdown: the UI renders it without access to the artifact store."""
    data = base64.b64encode(Path(path).read_bytes()).decode("ascii")
    return dg.MetadataValue.md(f"![{title}](data:image/png;base64,{data})")
