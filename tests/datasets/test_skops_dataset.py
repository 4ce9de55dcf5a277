"""SkopsDataset: versioned save/load of a scikit-learn model, and refusal of untrusted types."""

from __future__ import annotations

import json
import zipfile

import numpy as np
import pytest
from kedro.io import DataCatalog
from kedro.io.core import DatasetError, Version
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from skops.io.exceptions import UntrustedTypesFoundException

from so8t_kedro.datasets import SkopsDataset

TEXTS = ["kill a process", "how to build a bomb", "my medicine dose", "her home address",
         "bake a cake", "steal a password", "chest pain at night", "his phone number"]
LABEL_IDS = [0, 3, 1, 2, 0, 3, 1, 2]


@pytest.fixture(scope="module")
def model():
    return make_pipeline(TfidfVectorizer(analyzer="char_wb", ngram_range=(1, 3)),
                         LogisticRegression(random_state=0)).fit(TEXTS, LABEL_IDS)


def test_versions_round_trip_and_load_versions_picks_one(model, tmp_path):
    filepath = str(tmp_path / "reference_classifier.skops")
    first, second = "2026-12-01T00.00.00.000Z", "2026-12-02T00.00.00.000Z"
    SkopsDataset(filepath=filepath, trusted=[], version=Version(None, first)).save(model)
    refitted = make_pipeline(TfidfVectorizer(), LogisticRegression()).fit(TEXTS, LABEL_IDS)
    SkopsDataset(filepath=filepath, trusted=[], version=Version(None, second)).save(refitted)

    latest = SkopsDataset(filepath=filepath, trusted=[], version=Version(None, None)).load()
    older = SkopsDataset(filepath=filepath, trusted=[], version=Version(first, None)).load()
    np.testing.assert_array_equal(latest.predict_proba(TEXTS), refitted.predict_proba(TEXTS))
    np.testing.assert_array_equal(older.predict_proba(TEXTS), model.predict_proba(TEXTS))
    # the catalog form (as in conf/base/catalog.yml)
    catalog = DataCatalog.from_config({"reference_classifier": {
        "type": "so8t_kedro.datasets.SkopsDataset", "filepath": filepath, "trusted": [],
        "versioned": True}}, load_versions={"reference_classifier": first})
    np.testing.assert_array_equal(catalog.load("reference_classifier").predict_proba(TEXTS),
                                  model.predict_proba(TEXTS))


def _tampered_copy(source, target, replace: dict[str, str]) -> None:
    """``source`` with strings of its schema replaced, as an attacker would edit the file."""
    with zipfile.ZipFile(source) as original, zipfile.ZipFile(target, "w") as copy:
        for name in original.namelist():
            data = original.read(name)
            if name == "schema.json":
                text = data.decode()
                for old, new in replace.items():
                    assert old in text
                    text = text.replace(old, new)
                data = text.encode()
            copy.writestr(name, data)


def test_a_tampered_file_with_an_untrusted_type_is_refused(model, tmp_path):
    saved = tmp_path / "model.skops"
    SkopsDataset(filepath=str(saved), trusted=[]).save(model)
    tampered = tmp_path / "tampered.skops"
    _tampered_copy(saved, tampered, {
        json.dumps("sklearn.linear_model._logistic"): json.dumps("subprocess"),
        json.dumps("LogisticRegression"): json.dumps("Popen"),
    })
    with pytest.raises(DatasetError, match=r"Untrusted types .*'subprocess\.Popen'") as refused:
        SkopsDataset(filepath=str(tampered), trusted=[]).load()
    assert isinstance(refused.value.__cause__, UntrustedTypesFoundException)
    # the untampered file loads with the same (empty) list of extra trusted types
    assert SkopsDataset(filepath=str(saved), trusted=[]).load().predict(TEXTS).tolist() == (
        LABEL_IDS)


def test_trusted_must_be_an_explicit_list(tmp_path):
    for trusted in (True, None, "sklearn.pipeline.Pipeline"):
        with pytest.raises(DatasetError, match="list of type names"):
            SkopsDataset(filepath=str(tmp_path / "m.skops"), trusted=trusted)
