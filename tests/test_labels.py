"""normalise_label: the label spelling table."""

from __future__ import annotations

import pytest

from so8t_kedro.labels import LABEL_TO_ID, LABELS, normalise_label


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("ALLOW", "ALLOW"),
        ("ESCALATION", "ESCALATION"),
        ("DENY", "DENY"),
        ("REFUSE", "REFUSE"),
        ("allow", "ALLOW"),
        ("Deny", "DENY"),
        ("rEfUsE", "REFUSE"),
        ("  REFUSE\t", "REFUSE"),
        ("\nallow ", "ALLOW"),
        ("ESCALATE", "ESCALATION"),
        ("escalate", "ESCALATION"),
        (" Escalation ", "ESCALATION"),
        (0, "ALLOW"),
        (1, "ESCALATION"),
        (2, "DENY"),
        (3, "REFUSE"),
        ("0", "ALLOW"),
        ("3", "REFUSE"),
        (" 2 ", "DENY"),
    ],
)
def test_normalise_label_accepts(raw, expected):
    assert normalise_label(raw) == expected


@pytest.mark.parametrize(
    "raw", ["BLOCK", "ALLOWED", "ESCALATIONS", "4", "-1", "02", "1.0", "DENY REFUSE", 4, -1, 10]
)
def test_normalise_label_rejects_unknown(raw):
    with pytest.raises(ValueError, match="unknown label"):
        normalise_label(raw)


@pytest.mark.parametrize("raw", ["", "   ", "\t\n"])
def test_normalise_label_rejects_empty(raw):
    with pytest.raises(ValueError, match="empty"):
        normalise_label(raw)


@pytest.mark.parametrize("raw", [True, False, 1.0, None, ["ALLOW"], {"label": "ALLOW"}])
def test_normalise_label_rejects_wrong_type(raw):
    with pytest.raises(TypeError, match="string or an int"):
        normalise_label(raw)


def test_label_ids_follow_label_order():
    # Spelled out: LABEL_TO_ID and the int ids are both derived from LABELS, so comparing
    # them with LABELS itself would pass for any order.
    assert list(LABELS) == ["ALLOW", "ESCALATION", "DENY", "REFUSE"]
    assert [LABEL_TO_ID[label] for label in LABELS] == [0, 1, 2, 3]
    assert [normalise_label(i) for i in range(4)] == list(LABELS)
