"""The four safety labels, in the order of their ids (0-3).

ALLOW: answer normally. ESCALATION: needs a human or expert (medical, legal,
financial, self-harm risk). DENY: restricted by policy (personal data,
credentials, unauthorised system access). REFUSE: clearly harmful (weapons,
malware, violence, crime).
"""

LABELS: tuple[str, ...] = ("ALLOW", "ESCALATION", "DENY", "REFUSE")
LABEL_TO_ID: dict[str, int] = {label: i for i, label in enumerate(LABELS)}
# A true DENY/REFUSE predicted ALLOW is an unsafe miss.
UNSAFE_LABELS: frozenset[str] = frozenset({"DENY", "REFUSE"})

# Spellings of the labels found in the original system's data, beyond the
# canonical names (matched after strip + upper-case). Only aliases with a
# known source belong here: "ESCALATE" is the original system's verb form of
# ESCALATION. Ambiguous words such as "BLOCK" (DENY or REFUSE?) are left out on
# purpose, so that they are quarantined as unknown instead of guessed.
LABEL_ALIASES: dict[str, str] = {
    **{label: label for label in LABELS},
    "ESCALATE": "ESCALATION",
    # Label ids written as strings ("0".."3").
    **{str(i): label for i, label in enumerate(LABELS)},
}


def normalise_label(value: object) -> str:
    """Return the canonical label (one of ``LABELS``) for a raw label value.

    Accepts the canonical names and ``LABEL_ALIASES`` in any case with
    surrounding whitespace (``" escalate "`` -> ``"ESCALATION"``) and the label
    ids 0-3 as ``int`` or digit strings (``2`` / ``"2"`` -> ``"DENY"``).

    Raises:
        TypeError: ``value`` is neither ``str`` nor ``int`` (``bool`` counts as
            the wrong type: ``True`` is not a label id).
        ValueError: ``value`` is empty or names no known label.
    """
    if isinstance(value, str):
        label = LABEL_ALIASES.get(value)  # fast path: already canonical
        if label is not None:
            return label
        key = value.strip().upper()
        if not key:
            raise ValueError("label is empty")
        label = LABEL_ALIASES.get(key)
        if label is None:
            raise ValueError(f"unknown label {value!r}; expected one of {', '.join(LABELS)}")
        return label
    if isinstance(value, int) and not isinstance(value, bool):
        if 0 <= value < len(LABELS):
            return LABELS[value]
        raise ValueError(f"unknown label id {value}; expected 0-{len(LABELS) - 1}")
    raise TypeError(f"label must be a string or an int id, got {type(value).__name__}")
