"""The base of every parameters model: unknown keys are errors, types are strict."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict


class Strict(BaseModel):
    """Unknown keys are errors, and a value is not coerced into the declared type
    (``"3"`` is no int, ``1`` no bool; an int is a float). A field without a default is a
    key the YAML must hold: the values themselves live in ``conf/base``, never here."""

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)
