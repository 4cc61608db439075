"""The session benchmark's gate on known cases: a model must beat a baseline on both HR@20 and MRR@20."""

import pytest

from bench.sessions import gate

BASE = {"session_knn": {"HR@20": 51.45, "MRR@20": 18.16}, "popularity": {"HR@20": 0.84, "MRR@20": 0.21}}


@pytest.mark.parametrize(
    ("model", "beats_knn"),
    [
        ({"HR@20": 55.34, "MRR@20": 20.39}, True),  # the DIGINETICA result: passes
        ({"HR@20": 48.69, "MRR@20": 17.35}, False),  # the old defaults' result: fails
        ({"HR@20": 47.6, "MRR@20": 18.9}, False),  # better MRR, worse HR: fails
        ({"HR@20": 51.45, "MRR@20": 19.0}, False),  # a tie on HR is not a win
    ],
)
def test_session_knn_gate(model, beats_knn):
    assert gate(model, BASE) == {"beats_session_knn": beats_knn, "beats_popularity": True}


def test_a_missing_baseline_is_not_beaten():
    assert gate({"HR@20": 90.0, "MRR@20": 50.0}, {}) == {
        "beats_session_knn": False,
        "beats_popularity": False,
    }
