"""The `export` pipeline: SO8T adapter -> baked stock Phi-3 -> GGUF files -> Ollama.

embedded base (or base_model.path) + so8t_adapter, resolved once (``resolve_export_model``,
into the in-memory ``export_model``) -> ``baked_model`` -> its logits checked
against the gated model -> F16 and Q8_0 GGUF (gguf package), Q4_K_M from the F16 file
(llama.cpp) -> each file checked in llama.cpp -> Modelfile beside the GGUFs ->
``ollama create`` (skipped without Ollama) -> Japanese performance of original vs baked ->
HTML report.
"""

from kedro.pipeline import Node, Pipeline

from so8t_kedro.pipelines.shared_nodes import model_reference_node
from so8t_kedro.serve import summarise_performance

from .nodes import (
    bake_so8t_model,
    create_ollama_model,
    measure_japanese_performance,
    quantize_gguf_q4_k_m,
    render_export_report,
    verify_bake,
    verify_gguf_files,
    write_gguf_f16,
    write_gguf_q8_0,
    write_ollama_modelfile,
)

GGUF_PARAMS = ["params:export.model_name", "params:export.gguf"]
GGUF_FILES = ["gguf_f16", "gguf_q8_0", "gguf_q4_k_m"]


def create_pipeline(**kwargs) -> Pipeline:
    return Pipeline(
        [
            # The base + adapter being exported (so8t_adapter as the catalog loads it, on
            # the base it was trained on), as evaluation resolves them.
            model_reference_node("resolve_export_model", "export_model"),
            Node(
                func=bake_so8t_model,
                inputs=["export_model", "params:export.bake"],
                outputs="baked_model",
                name="bake_so8t_model",
            ),
            Node(
                func=verify_bake,
                inputs=["thinking_sft_dataset", "export_model", "baked_model",
                        "params:export.bake", "params:export.verify"],
                outputs="bake_verification",
                name="verify_bake",
            ),
            Node(
                func=write_gguf_f16,
                inputs=["baked_model", "bake_verification", *GGUF_PARAMS],
                outputs="gguf_f16",
                name="write_gguf_f16",
            ),
            Node(
                func=write_gguf_q8_0,
                inputs=["baked_model", "bake_verification", *GGUF_PARAMS],
                outputs="gguf_q8_0",
                name="write_gguf_q8_0",
            ),
            Node(
                func=quantize_gguf_q4_k_m,
                inputs=["gguf_f16", *GGUF_PARAMS],
                outputs="gguf_q4_k_m",
                name="quantize_gguf_q4_k_m",
            ),
            Node(
                func=verify_gguf_files,
                # checked against the baked model the manifests name as their source
                inputs=[*GGUF_FILES, "thinking_sft_dataset", "params:export"],
                outputs="gguf_verification",
                name="verify_gguf_files",
            ),
            Node(
                func=write_ollama_modelfile,
                inputs=[*GGUF_FILES, "params:export.ollama"],
                outputs="ollama_modelfile",
                name="write_ollama_modelfile",
            ),
            Node(
                func=create_ollama_model,
                inputs=["ollama_modelfile", "params:export.ollama"],
                outputs="ollama_model",
                name="create_ollama_model",
            ),
            Node(
                func=measure_japanese_performance,
                inputs=["export_model", "baked_model", "params:export.japanese_performance"],
                outputs="japanese_performance",
                name="measure_japanese_performance",
            ),
            Node(
                # per model: latency mean / p50 / p95, tokens/s, format shares, decisions
                func=summarise_performance,
                inputs="japanese_performance",
                outputs="japanese_performance_summary",
                name="summarise_japanese_performance",
            ),
            Node(
                func=render_export_report,
                inputs=["bake_verification", "gguf_verification", "ollama_model",
                        "japanese_performance", "japanese_performance_summary"],
                outputs="export_report",
                name="render_export_report",
                tags=["report"],
            ),
        ],
        tags=["export"],
    )
