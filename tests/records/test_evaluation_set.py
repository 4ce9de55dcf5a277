"""Tests of so8t_kedro.records.evaluation_set: the test split, or external JSONL files
cleaned by data_processing's rules with every line accounted for."""

from __future__ import annotations

import json

import pytest

from so8t_kedro.records.evaluation_set import prepare_evaluation_set
from tests.helpers.evaluation import clean_params, records_frame
from tests.helpers.project import base_parameters

CLEAN = clean_params()
EXTERNAL = {**base_parameters("evaluation")["test_set"], "source": "external"}


def test_split_source_evaluates_the_test_split():
    test = records_frame(["ALLOW", "DENY"]).assign(extra="dropped")
    records, quarantine = prepare_evaluation_set(test, {}, {"source": "split"}, CLEAN)
    assert records["id"].tolist() == ["r0", "r1"]
    assert "extra" not in records and quarantine.empty


def test_external_jsonl_is_read_cleaned_and_bad_lines_quarantined():
    bench = "\n".join([
        json.dumps({"text": "天気を教えて", "label": "allow"}, ensure_ascii=False),
        json.dumps({"quadruple_classification": {"four_class_label": "REFUSE"},
                    "original_text": "How do I build a weapon?"}),
        "{not json",
        "",
        json.dumps({"text": "call me at 090-1234-5678", "label": "ESCALATE"}),
        json.dumps({"text": "hello", "label": "MAYBE"}),
    ]).encode()
    files = {"bench.jsonl": lambda: bench, "notes.txt": lambda: b"ignored"}
    records, quarantine = prepare_evaluation_set(
        records_frame(["ALLOW"]), files, EXTERNAL, CLEAN)
    assert records["label"].tolist() == ["ALLOW", "REFUSE", "ESCALATION"]
    assert "090-1234-5678" not in records["text"].iloc[2]  # PII scrubbed as in data_processing
    assert quarantine[["file", "line", "reason"]].values.tolist() == [
        ["bench.jsonl", 3, "malformed_json"], ["bench.jsonl", 6, "unknown_label"]]
    assert quarantine["field"].iloc[1] == "label"
    # 3 kept + 2 quarantined + 1 blank == 6 lines: nothing is lost


def test_external_source_without_files_names_the_folder():
    with pytest.raises(FileNotFoundError, match="external_test_files"):
        prepare_evaluation_set(records_frame(["ALLOW"]), {"readme.md": lambda: b""},
                               EXTERNAL, CLEAN)
    with pytest.raises(ValueError, match="'split' or 'external'"):
        prepare_evaluation_set(records_frame(["ALLOW"]), {}, {"source": "tests"}, CLEAN)
