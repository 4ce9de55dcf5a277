"""The project's phrase bank, loaded once for the tests that render samples: as the catalog
gives it to the thinking_sft node (``PHRASE_BANK_DATA``) and checked (``PHRASE_BANK``)."""

from pathlib import Path

import yaml

from so8t_kedro.think import PhraseBank

PHRASE_BANK_PATH = Path(__file__).resolve().parents[2] / "conf" / "base" / "think_phrase_bank.yml"
PHRASE_BANK_DATA = yaml.safe_load(PHRASE_BANK_PATH.read_text(encoding="utf-8"))
PHRASE_BANK = PhraseBank.from_dict(PHRASE_BANK_DATA, source=str(PHRASE_BANK_PATH))
