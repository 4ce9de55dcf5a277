"""The /think format: chat template and decision probe (``format``), samples rendered from
the phrase bank (``phrases``), the reply parser (``parser``) and what of a reply may be
shown, deny by default (``disclosure``)."""

from so8t_kedro.think.disclosure import Disclosure, disclose, extract_final, withheld_reason
from so8t_kedro.think.format import (
    ASSISTANT_TOKEN,
    DECISION_KEY,
    DEFAULT_FORMAT,
    DEFAULT_MAX_QUOTED_CHARS,
    END_TOKEN,
    EOS_TOKEN,
    FINAL_CLOSE,
    FINAL_OPEN,
    FINAL_TAG,
    FORMATS,
    LANGUAGES,
    SECTION_FINAL_HEADER,
    SECTION_STEP_NAMES,
    SECTION_THINKING_HEADER,
    SYSTEM_PROMPT,
    SYSTEM_TOKEN,
    THINK_PARTS,
    THINK_TAGS,
    USER_TOKEN,
    decision_prefix,
    format_assistant,
    label_continuations,
    quote_request,
    render_decision_probe,
    render_prompt,
    request_from_prompt,
)
from so8t_kedro.think.parser import (
    ParsedReply,
    has_section_header,
    parse_reply,
    without_decision_lines,
)
from so8t_kedro.think.phrases import (
    PhraseBank,
    PhraseBankError,
    compose_final,
    compose_thinking,
    domain_phrases,
    load_phrase_bank,
    render_completion,
    render_sample,
    resolve_domain,
)

__all__ = [
    "ASSISTANT_TOKEN", "DECISION_KEY", "DEFAULT_FORMAT", "DEFAULT_MAX_QUOTED_CHARS",
    "END_TOKEN", "EOS_TOKEN", "FINAL_CLOSE", "FINAL_OPEN", "FINAL_TAG", "FORMATS",
    "LANGUAGES", "SECTION_FINAL_HEADER", "SECTION_STEP_NAMES", "SECTION_THINKING_HEADER",
    "SYSTEM_PROMPT", "SYSTEM_TOKEN", "THINK_PARTS", "THINK_TAGS", "USER_TOKEN",
    "Disclosure", "ParsedReply", "PhraseBank", "PhraseBankError",
    "compose_final", "compose_thinking", "decision_prefix", "disclose", "domain_phrases",
    "extract_final", "format_assistant", "has_section_header", "label_continuations",
    "load_phrase_bank", "parse_reply", "quote_request", "render_completion",
    "render_decision_probe", "render_prompt", "render_sample", "request_from_prompt",
    "resolve_domain", "withheld_reason", "without_decision_lines",
]
