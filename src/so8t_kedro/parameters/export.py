"""``conf/base/parameters_export.yml``: ``export``."""

from __future__ import annotations

from typing import Literal

from so8t_kedro.parameters._base import Strict


class BakeParameters(Strict):
    dtype: Literal["float32", "float16", "bfloat16"] | None
    tolerance: float


class VerifyParameters(Strict):
    split: str
    n_prompts: int
    max_tokens: int
    device: str


class GgufParameters(Strict):
    output_dir: str
    n_ctx: int
    f16_tolerance: float
    extra_buffer_types: Literal["off", "auto", "on"]


class OllamaParameters(Strict):
    quant: Literal["F16", "Q8_0", "Q4_K_M"]
    model: str
    timeout_s: float


class JapanesePerformanceParameters(Strict):
    prompts: list[str]
    max_new_tokens: int
    device: str


class ExportParameters(Strict):
    model_name: str
    bake: BakeParameters
    verify: VerifyParameters
    gguf: GgufParameters
    ollama: OllamaParameters
    japanese_performance: JapanesePerformanceParameters


class ExportFile(Strict):
    export: ExportParameters
