"""Structured text whose labels say what its values are (``pii.fields``): the cells of a
table (lines split by ``|``, a tab or a comma) under a header that names an entity type
(Account No., license_no, 氏名), the value of a quoted record field ("license_no":
"F2748193"), and the values of an SQL INSERT under its column list. Free-text rules miss
these: a bare 9-digit number or a lone surname in a cell carries no cue of its own but
its column's name."""

from __future__ import annotations

from collections.abc import Iterator

import regex
from presidio_analyzer import EntityRecognizer, RecognizerResult

from so8t_kedro.records.pii.config import FieldsConfig

# A table line's cell separators, most specific first: a line splits on the first of
# these it holds.
_SEPARATORS = ("|", "\t", ",")
# A quoted field name, a colon or =, and its quoted value (JSON, YAML flow, Python dicts).
_QUOTED_FIELD = regex.compile(
    r"""(?P<q>["'])(?P<name>[^"'\n]{1,40})(?P=q)\s*[:=]\s*(?P<vq>["'])(?P<value>[^"'\n]{1,80})(?P=vq)""")
# INSERT INTO table (columns) VALUES (row), (row)...; a row's values, quoted or bare.
_SQL_INSERT = regex.compile(
    r"INSERT\s+INTO\s+[\w.`\"\[\]]+\s*\((?P<columns>[^()]*)\)\s*VALUES\s*"
    r"(?P<rows>\((?:[^()']|'(?:[^']|'')*')*\)(?:\s*,\s*\((?:[^()']|'(?:[^']|'')*')*\))*)",
    regex.IGNORECASE)
_SQL_ROW = regex.compile(r"\(((?:[^()']|'(?:[^']|'')*')*)\)")
_SQL_VALUE = regex.compile(r"'(?:[^']|'')*'|[^,\s][^,]*")


class _FieldRecognizer(EntityRecognizer):
    """Values of table columns and record fields named after an entity type."""

    def __init__(self, config: FieldsConfig, language: str):
        super().__init__(supported_entities=sorted(config.names), name=f"fields_{language}",
                         supported_language=language)
        self._names = {entity: regex.compile(pattern) for entity, pattern in config.names.items()}
        self._values = {entity: regex.compile(pattern)
                        for entity, pattern in config.values.items()}
        self._bare_name = (regex.compile(config.bare_name_column)
                           if config.bare_name_column else None)
        self._contact = regex.compile(config.contact_column) if config.contact_column else None
        self._score = config.score

    def load(self) -> None:
        """Nothing to load: the patterns are compiled in ``__init__``."""

    def _entity_of(self, name: str) -> str | None:
        name = name.strip()
        return next((entity for entity, pattern in self._names.items()
                     if pattern.fullmatch(name)), None)

    def _value(self, entity: str, text: str, start: int, end: int) -> RecognizerResult | None:
        """The cell or value between start and end, stripped, if its type's pattern takes it."""
        while start < end and text[start] in " \"'":
            start += 1
        while end > start and text[end - 1] in " \"'\r":
            end -= 1
        if start == end or self._values[entity].fullmatch(text, start, end) is None:
            return None
        return RecognizerResult(entity, start, end, self._score)

    def _columns(self, names: list[str]) -> dict[int, str]:
        """Column index -> entity type for a header's names; a bare name column counts
        beside a contact column (Name, Email)."""
        columns = {k: entity for k, name in enumerate(names)
                   if (entity := self._entity_of(name)) is not None}
        if self._bare_name is not None and any(self._contact.fullmatch(n) for n in names):
            columns.update({k: "PERSON" for k, name in enumerate(names)
                            if self._bare_name.fullmatch(name)})
        return columns

    def _table_cells(self, text: str) -> Iterator[RecognizerResult]:
        lines, offset = [], 0
        for line in text.split("\n"):
            lines.append((offset, line))
            offset += len(line) + 1
        for i, (_, header) in enumerate(lines):
            separator = next((s for s in _SEPARATORS if s in header), None)
            if separator is None:
                continue
            columns = self._columns([cell.strip(" |") for cell in header.split(separator)])
            if not columns:
                continue
            for start, line in lines[i + 1:]:
                if separator not in line:
                    break
                position = start
                for k, cell in enumerate(line.split(separator)):
                    if k in columns:
                        result = self._value(columns[k], text, position, position + len(cell))
                        if result is not None:
                            yield result
                    position += len(cell) + len(separator)

    def _sql_inserts(self, text: str) -> Iterator[RecognizerResult]:
        for insert in _SQL_INSERT.finditer(text):
            columns = self._columns([name.strip(" `\"[]") for name in insert["columns"].split(",")])
            if not columns:
                continue
            for row in _SQL_ROW.finditer(text, *insert.span("rows")):
                for k, value in enumerate(_SQL_VALUE.finditer(text, *row.span(1))):
                    if k in columns:
                        result = self._value(columns[k], text, *value.span())
                        if result is not None:
                            yield result

    def _quoted_fields(self, text: str) -> Iterator[RecognizerResult]:
        # The text's field names read as one header: a bare "name" field is a person's
        # beside a contact field ("name", "tel"), as a table's column is.
        matches = list(_QUOTED_FIELD.finditer(text))
        columns = self._columns([match["name"] for match in matches])
        for k, match in enumerate(matches):
            entity = columns.get(k)
            if entity is not None:
                result = self._value(entity, text, *match.span("value"))
                if result is not None:
                    yield result

    def _results(self, text: str) -> Iterator[RecognizerResult]:
        yield from self._table_cells(text)
        yield from self._quoted_fields(text)
        yield from self._sql_inserts(text)

    def may_match(self, text: str) -> bool:
        # Asked of every text: stop at the first value found.
        return next(self._results(text), None) is not None

    def analyze(self, text, entities, nlp_artifacts=None):
        return list(self._results(text))
