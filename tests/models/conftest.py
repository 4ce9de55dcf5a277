"""The embedded base, built and saved once for the tests of ``so8t_kedro.models``."""

from __future__ import annotations

from pathlib import Path

import pytest

from so8t_kedro.models.embedded import embedded_base_model
from so8t_kedro.models.loading import save_base_model
from tests.helpers.embedded_base import embedded_params, seed_corpus


@pytest.fixture(scope="package")
def corpus() -> list[str]:
    return seed_corpus()


@pytest.fixture(scope="package")
def built(corpus):
    model, tokenizer = embedded_base_model(corpus, embedded_params(placeholder_tokens=[]))
    return model, tokenizer


@pytest.fixture(scope="package")
def saved(built, tmp_path_factory) -> Path:
    model, tokenizer = built
    return save_base_model(model, tokenizer, tmp_path_factory.mktemp("base") / "tiny")
