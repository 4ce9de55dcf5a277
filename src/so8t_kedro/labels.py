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
