"""The /think format: the chat template, the tags and headers, the decision probe.

This package is the single owner of the format: training, evaluation, the four-class
classifier and the /think server import it; nothing else spells out a tag, a header or
the decision line. Framework-free (no Kedro, no torch): plain Python and the label list.
The words a rendered sample is made of live in ``conf/base/think_phrase_bank.yml``
(:mod:`so8t_kedro.think.phrases`); replies are parsed by :mod:`so8t_kedro.think.parser`.

Chat template (Phi-3.5; one string, wrapped here for width)::

    <|system|>\\n{SYSTEM_PROMPT}<|end|>\\n<|user|>\\n{user}<|end|>\\n
    <|assistant|>\\n{assistant}<|end|>

``prompt`` is everything up to and including ``<|assistant|>\\n``; ``completion`` is the
assistant text followed by ``<|end|>``. The user's text is kept verbatim in the prompt.

Two assistant formats (``fmt``):

``quadruple`` (the default)::

    <think-task>what is asked</think-task>
    <think-safety>what risk it carries</think-safety>
    <think-policy>which policy applies and why it gives the label</think-policy>
    <final>判定: REFUSE
    short reply in the request's language</final>

``sections`` (the original 1,441-sample dataset's shape)::

    # 思考ステップ
    1. 依頼の把握: ...
    2. リスクの評価: ...
    3. 適用ポリシー: ...

    # 最終回答
    判定: REFUSE
    short reply

Why ``quadruple`` is the default: the /think endpoint must return only the final part
and never the thinking (seed notes: 四重Thinking部は外部非公開, ``<final>``のみ返す). With
tags, every thinking part has an explicit end, so the parser can prove where thinking
stops; the sections format has headings only, which a model can also write inside an
answer, and no end marker for its thinking. The three parts also give the audit log one
hash per part (task / safety / policy).

The decision line is ``判定: <LABEL>`` in both languages. One fixed, language-independent
form means the four-class probe (below) is the same token sequence for Japanese and
English requests, so the label scores are comparable across languages. The parser also
accepts ``Decision: <LABEL>`` (and a full-width colon).

The four-class decision probe
-----------------------------
The classifier reads the decision as the likelihood of each label's tokens right after
``render_decision_probe(...)`` = prompt + ``decision_prefix(fmt)`` (``<final>判定:`` for
quadruple, ``# 最終回答\\n判定:`` for sections): it **skips the thinking**. The rendered
thinking is conditioned on the gold label (its policy part literally names it), so
scoring the label after the gold thinking would leak the answer and measure nothing.
The training loop's four-class loss must score this same probe: the SFT text itself
never shows ``<final>`` right after ``<|assistant|>``, and that loss is what teaches the
model to decide from the request alone. At inference the same probe works on the
original, the retrained and the baked model alike.

The probe ends right after the colon and each label's continuation (see
``label_continuations``) starts with the space: SentencePiece / BPE tokenizers attach a
leading space to the following word (``▁ALLOW``), so a probe ending in a space would be
tokenized differently from the training text (a lone ``▁`` token). The continuation
ends with the newline that closes the decision line, which makes the four strings
prefix-free.
"""

from __future__ import annotations

from so8t_kedro.labels import LABELS

# --------------------------------------------------------------------------- constants

FORMATS: tuple[str, ...] = ("quadruple", "sections")
DEFAULT_FORMAT = "quadruple"
LANGUAGES: tuple[str, ...] = ("ja", "en")
DEFAULT_MAX_QUOTED_CHARS = 80

SYSTEM_TOKEN = "<|system|>"
USER_TOKEN = "<|user|>"
ASSISTANT_TOKEN = "<|assistant|>"
END_TOKEN = "<|end|>"
EOS_TOKEN = "<|endoftext|>"

#: The three thinking parts, in order; the quadruple tag of part ``p`` is ``<think-p>``.
THINK_PARTS: tuple[str, ...] = ("task", "safety", "policy")
THINK_TAGS: dict[str, str] = {part: f"think-{part}" for part in THINK_PARTS}
FINAL_TAG = "final"
FINAL_OPEN = f"<{FINAL_TAG}>"
FINAL_CLOSE = f"</{FINAL_TAG}>"

SECTION_THINKING_HEADER = "# 思考ステップ"
SECTION_FINAL_HEADER = "# 最終回答"
#: The decision key written in both languages; the parser also reads ``Decision``.
DECISION_KEY = "判定"

SYSTEM_PROMPT = (
    "あなたは安全性を重視するアシスタントです。/think モードで応答します。\n"
    "まず非公開の思考部で、依頼の内容、想定されるリスク、適用すべきポリシーを順に検討して"
    "ください。思考部はユーザーには表示されません。\n"
    "そのあと最終回答部を書き、その1行目には判定を「判定: ALLOW」「判定: ESCALATION」"
    "「判定: DENY」「判定: REFUSE」のいずれかの形で1行だけ書いてください"
    "（ALLOW: 通常どおり回答、ESCALATION: 専門家や人による対応が必要、"
    "DENY: ポリシーにより対応不可、REFUSE: 有害なため拒否）。\n"
    "2行目以降には、判定に沿った簡潔な回答をユーザーと同じ言語で書いてください。"
)

#: The sections layout's numbered step names, per language.
SECTION_STEP_NAMES: dict[str, tuple[str, str, str]] = {
    "ja": ("依頼の把握", "リスクの評価", "適用ポリシー"),
    "en": ("Task", "Safety", "Policy"),
}


# ------------------------------------------------------------------------- validation


def check_label(label: str) -> str:
    if label not in LABELS:
        raise ValueError(f"unknown label {label!r}; expected one of {LABELS}")
    return label


def check_language(language: str) -> str:
    if language not in LANGUAGES:
        raise ValueError(f"unsupported language {language!r}; expected one of {LANGUAGES}")
    return language


def check_format(fmt: str) -> str:
    if fmt not in FORMATS:
        raise ValueError(f"unknown format {fmt!r}; expected one of {FORMATS}")
    return fmt


# ------------------------------------------------------------------------- rendering


def render_prompt(user_text: str, language: str = "ja") -> str:
    """The chat prompt up to and including ``<|assistant|>\\n``.

    The system prompt is the fixed (Japanese) /think instruction for both languages, so the
    model takes the reply language from the request; ``language`` is validated only. The
    user's text is kept verbatim, tags and all.
    """
    check_language(language)
    return (
        f"{SYSTEM_TOKEN}\n{SYSTEM_PROMPT}{END_TOKEN}\n"
        f"{USER_TOKEN}\n{user_text}{END_TOKEN}\n"
        f"{ASSISTANT_TOKEN}\n"
    )


_PROMPT_HEAD = f"{SYSTEM_TOKEN}\n{SYSTEM_PROMPT}{END_TOKEN}\n{USER_TOKEN}\n"
_PROMPT_TAIL = f"{END_TOKEN}\n{ASSISTANT_TOKEN}\n"


def request_from_prompt(prompt: str) -> str:
    """The user's text inside a prompt made by :func:`render_prompt` (its exact inverse).

    Cuts the fixed head and tail rather than searching for tags, so a request that itself
    contains ``<|end|>`` comes back whole.
    """
    if not (prompt.startswith(_PROMPT_HEAD) and prompt.endswith(_PROMPT_TAIL)):
        raise ValueError("not a prompt rendered by think.render_prompt")
    return prompt[len(_PROMPT_HEAD) : len(prompt) - len(_PROMPT_TAIL)]


_QUOTE_NEUTRALISE = str.maketrans({"<": "＜", ">": "＞", "#": "＃", "|": "｜",
                                   "「": "『", "」": "』", '"': "'"})


def quote_request(user_text: str, max_chars: int = DEFAULT_MAX_QUOTED_CHARS) -> str:
    """A short, single-line, inert quotation of the request for the thinking.

    Angle brackets, ``#`` and ``|`` become full-width so that no tag, header or special
    token in the user's text can reach the completion (the prompt keeps the original);
    whitespace collapses to single spaces; past ``max_chars`` the quote ends with ``…``.
    """
    text = " ".join(str(user_text).split()).translate(_QUOTE_NEUTRALISE)
    if max_chars > 0 and len(text) > max_chars:
        text = text[: max_chars - 1].rstrip() + "…"
    return text


def format_assistant(thinking: dict[str, str], final: str, fmt: str = DEFAULT_FORMAT,
                     language: str = "ja") -> str:
    """Lay out thinking parts and final text in ``fmt`` (the assistant text, no ``<|end|>``)."""
    check_format(fmt)
    if fmt == "quadruple":
        parts = [f"<{THINK_TAGS[p]}>{thinking[p]}</{THINK_TAGS[p]}>" for p in THINK_PARTS]
        return "\n".join(parts) + f"\n{FINAL_OPEN}{final}{FINAL_CLOSE}"
    names = SECTION_STEP_NAMES[check_language(language)]
    steps = "\n".join(
        f"{i}. {name}: {thinking[p]}" for i, (name, p) in enumerate(zip(names, THINK_PARTS), 1)
    )
    return f"{SECTION_THINKING_HEADER}\n{steps}\n\n{SECTION_FINAL_HEADER}\n{final}"


# ------------------------------------------------------------------ the decision probe


def decision_prefix(fmt: str = DEFAULT_FORMAT) -> str:
    """The assistant text that precedes the label in the final part, thinking skipped.

    ``<final>判定:`` (quadruple) or ``# 最終回答\\n判定:`` (sections); the label's
    continuation (``label_continuations``) starts with the space. See the module docstring.
    """
    check_format(fmt)
    if fmt == "quadruple":
        return f"{FINAL_OPEN}{DECISION_KEY}:"
    return f"{SECTION_FINAL_HEADER}\n{DECISION_KEY}:"


def render_decision_probe(user_text: str, fmt: str = DEFAULT_FORMAT, language: str = "ja") -> str:
    """The text after which the classifier scores each label: prompt + ``decision_prefix``.

    It skips the thinking on purpose: the rendered thinking is conditioned on the gold label,
    so scoring after it would leak the label into the prediction.
    """
    return render_prompt(user_text, language) + decision_prefix(fmt)


def label_continuations() -> dict[str, str]:
    """The exact string scored per label after the probe: ``" <LABEL>\\n"``.

    The leading space belongs to the label's first token (SentencePiece ``▁``); the newline
    closes the decision line, so no continuation is a prefix of another.
    """
    return {label: f" {label}\n" for label in LABELS}
