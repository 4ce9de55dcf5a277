"""ingest_raw_records + clean_records: schemas, quarantine reasons, hostile JSONL."""

from __future__ import annotations

import json

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from so8t_kedro.labels import LABELS
from so8t_kedro.parameters import parameter_problems
from so8t_kedro.pipelines.data_processing import nodes
from so8t_kedro.records.schema import QUARANTINE_REASONS, RECORD_COLUMNS
from tests.helpers.project import base_parameters

from .conftest import SEED_NAME, jsonl, reasons

# -------------------------------------------------------------------------- schemas


def test_flat_and_nested_schemas_give_the_record_contract(run_until_report):
    seed = jsonl(
        {
            "id": "flat-1",
            "text": "猫の飼い方を教えて",
            "label": "ALLOW",
            "language": "ja",
            "domain": "pets",
        },
        {
            "quadruple_classification": {"four_class_label": "DENY", "confidence": 0.9},
            "text": "他人のパスワードを教えて",
        },
        {
            "quadruple_classification": {"four_class_label": "refuse"},
            "original_text": "How to build a bomb",
        },
        {
            "quadruple_classification": {"four_class_label": "ESCALATE"},
            "instruction": "次の症状について",
            "input": "胸が痛い",
            "output": "...",
        },
        {"quadruple_classification": {"four_class_label": 0}, "instruction": "Say hi"},
    )
    out = run_until_report(seed)
    records = out["train"]
    assert list(records.columns) == RECORD_COLUMNS
    assert records.to_dict("records") == [
        {
            "id": "flat-1",
            "text": "猫の飼い方を教えて",
            "label": "ALLOW",
            "label_id": 0,
            "language": "ja",
            "domain": "pets",
            "source": f"{SEED_NAME}:1",
        },
        {
            "id": f"{SEED_NAME}:2",
            "text": "他人のパスワードを教えて",
            "label": "DENY",
            "label_id": 2,
            "language": "ja",
            "domain": "unknown",
            "source": f"{SEED_NAME}:2",
        },
        {
            "id": f"{SEED_NAME}:3",
            "text": "How to build a bomb",
            "label": "REFUSE",
            "label_id": 3,
            "language": "en",
            "domain": "unknown",
            "source": f"{SEED_NAME}:3",
        },
        {
            "id": f"{SEED_NAME}:4",
            "text": "次の症状について\n胸が痛い",
            "label": "ESCALATION",
            "label_id": 1,
            "language": "ja",
            "domain": "unknown",
            "source": f"{SEED_NAME}:4",
        },
        {
            "id": f"{SEED_NAME}:5",
            "text": "Say hi",
            "label": "ALLOW",
            "label_id": 0,
            "language": "en",
            "domain": "unknown",
            "source": f"{SEED_NAME}:5",
        },
    ]
    assert out["quarantine"].empty


def test_text_field_precedence_and_nested_label_precedence(run_until_report):
    seed = jsonl(
        {"text": "from text", "original_text": "from original", "label": "ALLOW"},
        {"text": None, "original_text": "from original", "label": "ALLOW"},
        {
            "quadruple_classification": {"four_class_label": "DENY"},
            "label": "ALLOW",
            "text": "nested wins",
        },
        {
            "quadruple_classification": {"confidence": 0.3},
            "label": "REFUSE",
            "text": "flat fallback",
        },
    )
    records = run_until_report(seed)["train"]
    assert records["text"].tolist() == [
        "from text",
        "from original",
        "nested wins",
        "flat fallback",
    ]
    assert records["label"].tolist() == ["ALLOW", "ALLOW", "DENY", "REFUSE"]


def test_language_is_carried_normalised_or_detected(run_until_report):
    seed = jsonl(
        {"text": "hello there", "label": "ALLOW", "language": "JA"},  # carried, even if odd
        {"text": "こんにちは", "label": "ALLOW", "language": " en-US "},
        {"text": "おはよう", "label": "ALLOW"},
        {"text": "hello!", "label": "ALLOW", "language": ""},
        {"text": "hi there", "label": "ALLOW", "language": "Japanese"},
        {"text": "hola", "label": "ALLOW", "language": "es"},
    )
    out = run_until_report(seed)
    assert out["train"]["language"].tolist() == ["ja", "en", "ja", "en", "ja"]
    assert reasons(out["quarantine"]) == [(6, "unsupported_language")]


def test_ids_are_strings_and_unique(run_until_report):
    seed = jsonl(
        {"id": 7, "text": "one", "label": "ALLOW"},
        {"id": "  dup ", "text": "two", "label": "ALLOW"},
        {"id": "dup", "text": "three", "label": "ALLOW"},
        {"id": "", "text": "four", "label": "ALLOW"},
    )
    ids = run_until_report(seed)["train"]["id"].tolist()
    assert ids == ["7", "dup", f"dup@{SEED_NAME}:3", f"{SEED_NAME}:4"]


# ---------------------------------------------------------------- quarantine reasons

LONG = "x" * 4001
NESTED_LABEL = "quadruple_classification.four_class_label"


def nested_label_line(label: object) -> bytes:
    """A JSONL line whose label is ``quadruple_classification.four_class_label``."""
    return json.dumps(
        {"text": "t", "quadruple_classification": {"four_class_label": label}}
    ).encode()


@pytest.mark.parametrize(
    ("line", "reason", "field"),
    [
        (b"\xff\xfe{}", "invalid_utf8", None),
        (b'{"text": "\\ud800 lone", "label": "ALLOW"}', "invalid_utf8", "text"),
        (b'{"text": "ok", "label": "ALLOW", "domain": "\\udc00"}', "invalid_utf8", "domain"),
        (b'{"text": "trunc', "malformed_json", None),
        (b"not json at all", "malformed_json", None),
        (b"[" * 100_000, "malformed_json", None),  # too deeply nested
        (b'["ALLOW", "text"]', "not_an_object", None),
        (b'"just a string"', "not_an_object", None),
        (b"42", "not_an_object", None),
        (b"null", "not_an_object", None),
        (json.dumps({"label": "ALLOW"}).encode(), "missing_text", "text"),
        (json.dumps({"text": None, "label": "ALLOW"}).encode(), "missing_text", "text"),
        (json.dumps({"text": 5, "label": "ALLOW"}).encode(), "wrong_type", "text"),
        (
            json.dumps({"original_text": ["a"], "label": "ALLOW"}).encode(),
            "wrong_type",
            "original_text",
        ),
        (
            json.dumps({"instruction": {"a": 1}, "label": "ALLOW"}).encode(),
            "wrong_type",
            "instruction",
        ),
        (
            json.dumps({"instruction": "do", "input": 3, "label": "ALLOW"}).encode(),
            "wrong_type",
            "input",
        ),
        (json.dumps({"text": "t", "label": True}).encode(), "wrong_type", "label"),
        (json.dumps({"text": "t", "label": 1.0}).encode(), "wrong_type", "label"),
        (json.dumps({"text": "t", "label": ["ALLOW"]}).encode(), "wrong_type", "label"),
        (
            json.dumps({"text": "t", "quadruple_classification": "DENY"}).encode(),
            "wrong_type",
            "quadruple_classification",
        ),
        (nested_label_line(2.5), "wrong_type", NESTED_LABEL),
        (json.dumps({"id": [1], "text": "t", "label": "ALLOW"}).encode(), "wrong_type", "id"),
        (
            json.dumps({"text": "t", "label": "ALLOW", "language": 3}).encode(),
            "wrong_type",
            "language",
        ),
        (
            json.dumps({"text": "t", "label": "ALLOW", "domain": {}}).encode(),
            "wrong_type",
            "domain",
        ),
        (json.dumps({"text": "t"}).encode(), "missing_label", "label"),
        (json.dumps({"text": "t", "label": None}).encode(), "missing_label", "label"),
        (json.dumps({"text": "t", "label": "  "}).encode(), "missing_label", "label"),
        (nested_label_line(""), "missing_label", NESTED_LABEL),
        (json.dumps({"text": "t", "label": "BLOCK"}).encode(), "unknown_label", "label"),
        (json.dumps({"text": "t", "label": 7}).encode(), "unknown_label", "label"),
        (nested_label_line("BLOCK"), "unknown_label", NESTED_LABEL),
        (json.dumps({"text": " \u3000\u200b\n ", "label": "ALLOW"}).encode(), "empty_text", "text"),
        (json.dumps({"text": LONG, "label": "ALLOW"}).encode(), "text_too_long", "text"),
        (
            json.dumps({"text": "t", "label": "ALLOW", "language": "fr"}).encode(),
            "unsupported_language",
            "language",
        ),
    ],
)
def test_each_quarantine_reason(run_until_report, line, reason, field):
    seed = jsonl({"text": "a good record", "label": "ALLOW"}, line)
    out = run_until_report(seed)
    q = out["quarantine"]
    assert reasons(q) == [(2, reason)]
    row = q.iloc[0]
    assert row["field"] == field
    assert row["file"] == SEED_NAME and row["source"] == f"{SEED_NAME}:2"
    assert row["detail"].startswith(f"{SEED_NAME}:2: ")
    assert 0 < len(row["raw"]) <= 200
    assert out["train"]["text"].tolist() == ["a good record"]
    assert out["report"]["totals"]["lines_read"] == 2


def test_text_length_limit_is_a_parameter(run_until_report):
    seed = jsonl({"text": "x" * 10, "label": "ALLOW"}, {"text": "x" * 11, "label": "DENY"})
    out = run_until_report(seed, clean={"max_text_chars": 10})
    assert reasons(out["quarantine"]) == [(2, "text_too_long")]
    assert "11 characters" in out["quarantine"]["detail"].iloc[0]


def test_text_length_is_checked_after_pii_scrubbing(run_until_report):
    seed = jsonl({"text": "a@b.co xyz", "label": "DENY"}, {"text": "c@d.co xy", "label": "DENY"})
    out = run_until_report(seed, clean={"max_text_chars": 10})
    assert out["train"]["text"].tolist() == ["<EMAIL> xy"]
    assert reasons(out["quarantine"]) == [(1, "text_too_long")]
    # the quarantined record's e-mail is not counted
    assert out["pii"]["by_type"]["EMAIL_ADDRESS"] == 1


def test_a_bad_parameter_value_raises_naming_the_parameter(run_until_report):
    with pytest.raises(ValueError, match=r"params:data_processing\.clean\.max_text_chars"):
        run_until_report(jsonl({"text": "t", "label": "ALLOW"}), clean={"max_text_chars": 0})


@pytest.mark.parametrize(
    ("section", "key", "value"),
    [
        ("clean", "max_text_chars", "4000"),
        ("clean", "scrub_pii", "yes"),
        ("ingest", "raw_snippet_chars", None),
    ],
)
def test_a_mistyped_parameter_fails_the_run_at_its_start(section, key, value):
    """Types are checked once, when the run starts (so8t_kedro.parameters), not per node."""
    params = base_parameters()
    params["data_processing"][section][key] = value
    [problem] = parameter_problems(params)
    assert problem.startswith(
        f"parameters_data_processing.yml: data_processing.{section}.{key}: ")


def test_wrong_input_type_names_the_file(params):
    with pytest.raises(TypeError, match=r"four_class_a\.jsonl"):
        nodes.ingest_raw_records({"four_class_a.jsonl": lambda: 123}, b"", params["ingest"])


def test_quarantined_raw_snippets_are_scrubbed_too(run_until_report):
    seed = jsonl({"text": "mail a@example.com or call 090-1234-5678", "label": "BLOCK"})
    raw = run_until_report(seed)["quarantine"]["raw"].tolist()
    assert raw == ['{"text": "mail <EMAIL> or call <PHONE>", "label": "BLOCK"}']
    raw = run_until_report(seed, clean={"scrub_pii": False})["quarantine"]["raw"].tolist()
    assert raw == ['{"text": "mail a@example.com or call 090-1234-5678", "label": "BLOCK"}']


def test_pii_scrubbing_can_be_switched_off(run_until_report):
    seed = jsonl({"text": "mail a@example.com", "label": "DENY"})
    assert run_until_report(seed)["train"]["text"].tolist() == ["mail <EMAIL>"]
    out = run_until_report(seed, clean={"scrub_pii": False})
    assert out["train"]["text"].tolist() == ["mail a@example.com"]
    assert out["report"]["pii_replacements"] == {"by_type": {}, "by_file": {}}


def test_a_record_the_pii_engine_fails_on_is_quarantined(run_until_report, params, monkeypatch):
    """Never passed through unscrubbed; the accounting still holds (the report checks)."""
    from so8t_kedro.records.pii import pii_scrubber

    analyzer = pii_scrubber(params["clean"]["pii"]).analyzer
    analyze = analyzer.analyze

    def failing(text, **kwargs):
        if "爆発" in text:
            raise RuntimeError("engine crashed")
        return analyze(text=text, **kwargs)

    monkeypatch.setattr(analyzer, "analyze", failing)
    seed = jsonl(
        {"text": "田中花子の電話は090-1234-5678", "label": "DENY"},
        {"text": "山田太郎が爆発したと言っている", "label": "ESCALATION"},
        {"text": "mail a@example.com", "label": "DENY"},
    )
    out = run_until_report(seed)
    assert out["train"]["text"].tolist() == ["<PERSON>の電話は<PHONE>", "mail <EMAIL>"]
    assert reasons(out["quarantine"]) == [(2, "pii_scrub_failed")]
    detail = out["quarantine"]["detail"].iloc[0]
    assert detail == f"{SEED_NAME}:2: PII engine error: RuntimeError: engine crashed"
    assert "山田太郎" not in out["quarantine"]["raw"].iloc[0]  # its snippet is emptied
    assert out["report"]["invariant"]["accounted"] == out["report"]["totals"]["lines_read"] == 3
    assert out["report"]["pii_replacements"]["by_file"] == {
        SEED_NAME: {"PERSON": 1, "PHONE_NUMBER": 1, "EMAIL_ADDRESS": 1}
    }


# ------------------------------------------------------------------------ partitions


def test_partitions_are_filtered_sorted_and_reported(run_until_report):
    partitions = {
        "four_class_b.jsonl": jsonl({"text": "b1", "label": "DENY"}),
        "four_class_a.jsonl": jsonl({"text": "a1", "label": "ALLOW"}, {"text": "a2", "label": 3}),
        "notes.txt": b"not read",
        "four_class_c.json": b"wrong suffix",
        "other_20251108.jsonl": b"does not match",
        "sub/four_class_d.jsonl": b"in a sub-folder",
        ".gitkeep": b"",
    }
    out = run_until_report(jsonl({"text": "seed 1", "label": "ESCALATION"}), partitions)
    assert out["train"]["source"].tolist() == [
        f"{SEED_NAME}:1",
        "four_class_a.jsonl:1",
        "four_class_a.jsonl:2",
        "four_class_b.jsonl:1",
    ]
    report = out["report"]
    assert report["ignored_files"] == [
        ".gitkeep",
        "four_class_c.json",
        "notes.txt",
        "other_20251108.jsonl",
        "sub/four_class_d.jsonl",
    ]
    assert {name: f["lines_read"] for name, f in report["files"].items()} == {
        SEED_NAME: 1,
        "four_class_a.jsonl": 2,
        "four_class_b.jsonl": 1,
    }


def test_seed_name_clashing_with_a_partition_is_an_error(params):
    with pytest.raises(ValueError, match=rf"seed_file_name '{SEED_NAME}' is also the name"):
        nodes.ingest_raw_records({SEED_NAME: lambda: b""}, b"", params["ingest"])


def test_ignored_partitions_are_never_loaded(params):
    def explode():
        raise AssertionError("an ignored partition was loaded")

    raw, _, summary = nodes.ingest_raw_records({"notes.txt": explode}, b"", params["ingest"])
    assert raw.empty and summary["ignored_files"] == ["notes.txt"]


def test_zero_partitions_and_empty_seed(run_until_report):
    out = run_until_report(b"", {})
    assert out["report"]["totals"] == {
        "lines_read": 0,
        "blank_lines": 0,
        "kept": 0,
        "quarantined": 0,
        "duplicates": 0,
    }


# --------------------------------------------------------------------- hostile JSONL

GOOD = b'{"text": "good", "label": "ALLOW"}'
MB_TEXT = json.dumps({"text": "y" * 1_000_000, "label": "DENY"}).encode()


@pytest.mark.parametrize(
    ("name", "data", "lines_read", "blank", "kept", "quarantined"),
    [
        ("empty file", b"", 0, 0, 0, []),
        ("only newlines", b"\n\n\r\n", 3, 3, 0, []),
        ("no final newline", GOOD, 1, 0, 1, []),
        ("truncated last line", GOOD + b'\n{"text": "tru', 2, 0, 1, [(2, "malformed_json")]),
        ("utf-8 BOM", b"\xef\xbb\xbf" + GOOD + b"\n", 1, 0, 1, []),
        (
            "BOM not at file start",
            GOOD + b"\n\xef\xbb\xbf" + GOOD,
            2,
            0,
            1,
            [(2, "malformed_json")],
        ),
        (
            "latin-1 bytes",
            GOOD + b'\n{"text": "caf\xe9", "label": "ALLOW"}\n',
            2,
            0,
            1,
            [(2, "invalid_utf8")],
        ),
        (
            "shift-jis bytes",
            '{"text": "日本語", "label": "ALLOW"}'.encode("shift_jis") + b"\n",
            1,
            0,
            0,
            [(1, "invalid_utf8")],
        ),
        ("1 MB line", MB_TEXT + b"\n" + GOOD, 2, 0, 1, [(1, "text_too_long")]),
        ("null line", b"null\n" + GOOD, 2, 0, 1, [(1, "not_an_object")]),
        (
            "null fields",
            b'{"text": null, "label": null}\n{"text": "x", "label": null}\n',
            2,
            0,
            0,
            [(1, "missing_text"), (2, "missing_label")],
        ),
        (
            "numbers for strings",
            b'{"text": 12, "label": "ALLOW"}\n{"text": "x", "label": "ALLOW", "domain": 5}\n',
            2,
            0,
            0,
            [(1, "wrong_type"), (2, "wrong_type")],
        ),
        (
            "CRLF endings",
            GOOD + b"\r\n" + GOOD.replace(b"good", b"fine") + b"\r\n\r\n",
            3,
            1,
            2,
            [],
        ),
        (
            "JSON array",
            b'[{"text": "a", "label": "ALLOW"}]\n' + GOOD,
            2,
            0,
            1,
            [(1, "not_an_object")],
        ),
        (
            "blank lines between",
            GOOD + b"\n\n   \n\t\n" + GOOD.replace(b"good", b"ok"),
            5,
            3,
            2,
            [],
        ),
        ("NUL bytes", b"\x00\x00\x00\n" + GOOD, 2, 0, 1, [(1, "malformed_json")]),
    ],
)
def test_hostile_jsonl(run_until_report, name, data, lines_read, blank, kept, quarantined):
    out = run_until_report(b"", {"four_class_hostile.jsonl": data})
    file_report = out["report"]["files"]["four_class_hostile.jsonl"]
    assert file_report["lines_read"] == lines_read, name
    assert file_report["blank_lines"] == blank, name
    assert file_report["kept"] == kept, name
    assert reasons(out["quarantine"]) == quarantined, name
    assert file_report["kept"] + file_report["quarantined"] + file_report["duplicates"] + blank == (
        lines_read
    )
    assert out["quarantine"]["raw"].str.len().le(200).all()
    assert file_report["utf8_bom_stripped"] == data.startswith(b"\xef\xbb\xbf")


_json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda children: (
        st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=8), children, max_size=3)
    ),
    max_leaves=8,
)
_records = st.fixed_dictionaries(
    {},
    optional={
        "id": st.one_of(st.text(max_size=5), st.integers(), st.none()),
        "text": st.one_of(st.text(max_size=30), st.integers(), st.none()),
        "label": st.one_of(
            st.sampled_from(["ALLOW", "deny", " REFUSE ", "ESCALATE", "BLOCK", "", "2"]),
            st.integers(-1, 5),
            st.booleans(),
            st.none(),
        ),
        "language": st.one_of(st.sampled_from(["ja", "en", "fr", "EN"]), st.none(), st.integers()),
        "domain": st.one_of(st.text(max_size=5), st.none()),
    },
)
_lines = st.one_of(
    _records.map(lambda r: json.dumps(r).encode()),
    _json_values.map(lambda v: json.dumps(v).encode()),
    st.binary(max_size=40).map(lambda b: b.replace(b"\n", b"")),
    st.sampled_from(
        [
            b"",
            b"  ",
            b"\r",
            b"{",
            b'{"text": "same", "label": "ALLOW"}',
            b'{"text": "SAME!", "label": "DENY"}',
            b'{"text": "same", "label": "ALLOW"}',
        ]
    ),
)


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(files=st.lists(st.lists(_lines, max_size=12), max_size=3), bom=st.booleans())
def test_fuzzed_jsonl_is_always_accounted_for(run_until_report, files, bom):
    partitions = {
        f"four_class_{i}.jsonl": (b"\xef\xbb\xbf" if bom else b"") + b"\n".join(lines)
        for i, lines in enumerate(files)
    }
    out = run_until_report(b"", partitions)  # raises RecordAccountingError on a leak
    totals = out["report"]["totals"]
    # A final newline ends the last line; it does not open a new one.
    expected_lines = sum(
        len(parts) - (parts[-1] == b"")
        for parts in (data.split(b"\n") for data in partitions.values())
    )
    assert totals["lines_read"] == expected_lines
    assert (
        totals["kept"] + totals["quarantined"] + totals["duplicates"] + totals["blank_lines"]
        == (totals["lines_read"])
    )
    assert set(out["quarantine"]["reason"]) <= set(QUARANTINE_REASONS)
    kept = out["train"]
    assert kept["label"].isin(LABELS).all()
    assert kept["id"].is_unique
    assert (kept["text"].str.len() > 0).all()


def test_crlf_is_stripped_from_quarantined_lines(run_until_report):
    out = run_until_report(b"", {"four_class_crlf.jsonl": b"{oops\r\n" + GOOD + b"\r\n"})
    assert out["quarantine"][["line", "reason", "raw"]].values.tolist() == [
        [1, "malformed_json", "{oops"]
    ]
    assert out["train"]["source"].tolist() == ["four_class_crlf.jsonl:2"]
