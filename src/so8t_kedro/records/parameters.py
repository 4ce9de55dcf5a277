"""Reading the records' parameters with errors that name the key and its file.

The records are configured by ``conf/base/parameters_data_processing.yml`` (the evaluation
cleans its external test sets with the same ``clean`` section), so every message names
``params:data_processing.<section>.<key>``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any


def read_param(params: Mapping[str, Any], key: str, section: str, kind: type | tuple[type, ...]):
    """Read ``params[key]``, raising a message that names ``params:<section>.<key>``."""
    name = f"params:data_processing.{section}.{key}"
    if key not in params:
        raise KeyError(f"{name} is missing (conf/base/parameters_data_processing.yml)")
    value = params[key]
    if not isinstance(value, kind) or (isinstance(value, bool) and kind is not bool):
        kinds = " or ".join(k.__name__ for k in (kind if isinstance(kind, tuple) else (kind,)))
        raise TypeError(f"{name} must be of type {kinds}, got {value!r}")
    return value
