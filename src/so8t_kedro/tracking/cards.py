""":class:`ModelCardHooks`: a model card (README.md) beside every adapter and baked model.

Written whether tracking is on or off (the card belongs to the model folder, not to the
MLflow run). Names from conf/base/parameters_model_cards.yml:

- a ``models`` folder gets its card when the run saves it, from what the run knows: the
  base model and hyper-parameters (the run's parameters, ``--params`` included), the
  training data (``training_data``, when the run loads or saves it: counts per label and
  language, its version);
- when the run saves ``evaluation`` (the evaluation's metrics), the cards of the model
  folders the run saved or loaded are written again with the evaluation table, e.g. the
  adapter that ``kedro run --pipelines=evaluation`` scored.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from kedro.framework.hooks import hook_impl
from kedro.io import AbstractVersionedDataset, CatalogProtocol
from pydantic import BaseModel, ConfigDict

from so8t_kedro.reporting.model_card import TrainingData, model_card, write_model_card

if TYPE_CHECKING:
    from kedro.framework.context import KedroContext

logger = logging.getLogger(__name__)

EMBEDDED_BASE = "embedded default (tiny Phi3ForCausalLM built by the pipeline)"


class ModelCardsConfig(BaseModel):
    """``params:model_cards``; unknown keys are errors."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    models: dict[str, Literal["adapter", "baked"]]
    training_data: str
    evaluation: str


class ModelCardHooks:
    """Writes :func:`so8t_kedro.reporting.model_card.model_card` into the model folders of a run."""

    @hook_impl
    def after_context_created(self, context: KedroContext) -> None:
        try:
            self._config = ModelCardsConfig.model_validate(context.params["model_cards"])
        except (KeyError, ValueError) as error:
            raise ValueError("params:model_cards (conf/base/parameters_model_cards.yml) is "
                             f"invalid: {error!r}") from error
        self._params = context.params

    @hook_impl
    def after_catalog_created(self, catalog: CatalogProtocol, save_version: str) -> None:
        self._catalog = catalog
        self._save_version = save_version

    @hook_impl
    def before_pipeline_run(self) -> None:
        self._folders: dict[str, Path] = {}  # model dataset -> folder saved or loaded
        self._data: TrainingData | None = None
        self._evaluation: dict[str, Any] | None = None

    @hook_impl
    def after_dataset_loaded(self, dataset_name: str, data: Any) -> None:
        if dataset_name == self._config.training_data:
            dataset = self._catalog.get(dataset_name)
            version = (dataset.resolve_load_version()
                       if isinstance(dataset, AbstractVersionedDataset) else None)
            self._data = TrainingData.from_samples(data, version)
        elif dataset_name in self._config.models:
            self._folders[dataset_name] = Path(data)  # HFDirectoryDataset loads its folder

    @hook_impl
    def after_dataset_saved(self, dataset_name: str, data: Any) -> None:
        if dataset_name == self._config.training_data:
            self._data = TrainingData.from_samples(data, self._save_version)
        elif dataset_name in self._config.models:
            # the folder of the version just saved (HFDirectoryDataset loads as its path)
            self._folders[dataset_name] = folder = Path(self._catalog.load(dataset_name))
            self._write(dataset_name, folder)
        elif dataset_name == self._config.evaluation:
            self._evaluation = data
            for name, folder in self._folders.items():
                self._write(name, folder)

    def _write(self, dataset_name: str, folder: Path) -> None:
        base = self._params["base_model"]
        params = {"training": self._params["training"]}
        if base["path"] is None:  # the embedded default trains with its own recipe
            params["base_model.embedded_training"] = base["embedded_training"]
        card = model_card(self._config.models[dataset_name],
                          base_model=base["path"] or EMBEDDED_BASE, params=params,
                          data=self._data, evaluation=self._evaluation)
        logger.info("Model card written: %s", write_model_card(folder, card))
