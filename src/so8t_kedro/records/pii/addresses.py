"""An address found in part, carried over the rest of it (``pii.address_parts``): the
recognisers find the street and the city, and leave the flat and the building before or
after it (4B, 221 Larchmont Ave ...; 京都市左京区北白川西町87番地 ハイム北白川2F), the state,
the postcode or the country after it (..., Fitzroy VIC 3065, Australia), a lot number
after a minus sign NFKC does not fold (大通西11丁目4−2)."""

from __future__ import annotations

import regex
from presidio_analyzer import RecognizerResult

from so8t_kedro.records.pii.config import AddressPartsConfig
from so8t_kedro.records.pii.text import _expand_words


class _AddressExtender:
    """Address spans carried over the parts ``before`` ends right at (repeatedly) and the
    parts ``after`` starts right at (repeatedly), never into another entity's span."""

    def __init__(self, config: AddressPartsConfig):
        self._before = regex.compile("(?:" + _expand_words(config.before, config.words) + ")$")
        self._after = regex.compile(_expand_words(config.after, config.words))

    def extend(self, text: str, results: list[RecognizerResult]) -> list[RecognizerResult]:
        others = [(r.start, r.end) for r in results if r.entity_type != "ADDRESS"]

        def free(start: int, end: int) -> bool:
            return all(end <= s or e <= start for s, e in others)

        for address in (r for r in results if r.entity_type == "ADDRESS"):
            while (part := self._after.match(text, address.end)) and part.end() > address.end \
                    and free(address.end, part.end()):
                address.end = part.end()
            while (part := self._before.search(text, 0, address.start)) \
                    and part.start() < address.start and free(part.start(), address.start):
                address.start = part.start()
        return results
