"""docs/configuration.md is the settings' own reference: every field documented, the file current."""

import dataclasses
from pathlib import Path

from relevance_service.settings import ServiceSettings, reference

DOC = Path(__file__).resolve().parents[2] / "docs" / "configuration.md"


def test_every_setting_says_what_it_means():
    undocumented = [f.name for f in dataclasses.fields(ServiceSettings) if not f.metadata.get("doc")]
    assert undocumented == []


def test_the_reference_lists_every_setting_with_its_default():
    text = reference()
    for f in dataclasses.fields(ServiceSettings):
        assert f"| `RELEVANCE_{f.name.upper()}` |" in text
    assert "| `RELEVANCE_CANDIDATES_K` | `500` |" in text
    assert "| `RELEVANCE_API_TOKEN` | (empty) |" in text


def test_docs_configuration_is_current():
    assert DOC.read_text() == reference(), (
        "docs/configuration.md is stale: python -m relevance_service.settings > docs/configuration.md"
    )
