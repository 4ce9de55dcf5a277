"""The project's phrase bank, loaded once for the tests that render samples: as the catalog
gives it to the thinking_sft node (``PHRASE_BANK_DATA``) and checked (``PHRASE_BANK``), and
the node's parameters as conf/base holds them (``THINKING_SFT_PARAMS``)."""

from pathlib import Path

import yaml

from so8t_kedro.think import PhraseBank

CONF_BASE = Path(__file__).resolve().parents[2] / "conf" / "base"
PHRASE_BANK_PATH = CONF_BASE / "think_phrase_bank.yml"
PHRASE_BANK_DATA = yaml.safe_load(PHRASE_BANK_PATH.read_text(encoding="utf-8"))
PHRASE_BANK = PhraseBank.from_dict(PHRASE_BANK_DATA, source=str(PHRASE_BANK_PATH))
THINKING_SFT_PARAMS = yaml.safe_load(
    (CONF_BASE / "parameters_thinking_sft.yml").read_text(encoding="utf-8"))["thinking_sft"]
