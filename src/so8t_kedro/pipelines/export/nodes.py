"""Nodes of the `export` pipeline: bake, verify, GGUF files, Ollama, Japanese check, report.

The baked model is a catalog dataset like every other model (``baked_model``, a versioned
``HFDirectoryDataset``): the bake node returns it, Kedro saves it, later nodes load its path.

The GGUF files and the Ollama Modelfile are not catalog datasets. They are written by
tools that take a path (the ``gguf`` package's writer, llama.cpp's quantiser) into one
stable folder, ``<export.gguf.output_dir>/<export.model_name>/``, because

* the files are what users hand to other tools: the Modelfile names its GGUF relative to
  itself (``FROM ./<name>-Q4_K_M.gguf``), and ``ollama create`` / llama.cpp commands in the
  README point at fixed paths, which Kedro's ``<version>/`` sub-folders would break;
* a GGUF of the real model is 2-8 GB and is streamed to disk by its writer; passing it
  through a dataset's ``save`` would mean a custom dataset that only moves a file.

Each of these nodes returns a small *manifest* instead (path, size, SHA-256, tensor count,
metadata, the model directory it came from), saved as a versioned JSON dataset on the
model_output layer. kedro-viz draws the manifests as the artefacts (with a JSON preview),
the DAG shows what each file is made from (Q4_K_M from the F16 file, the GGUFs only after
the bake check passed), and each run's manifest version records which bytes the fixed-path
file held then.
"""

from __future__ import annotations

import hashlib
import logging
import shlex
import shutil
import subprocess
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pandas as pd
from transformers import AutoConfig, AutoTokenizer

from so8t_kedro import so8t
from so8t_kedro import think as tf
from so8t_kedro.decision.scoring import load_scoring_model
from so8t_kedro.export.gguf import gguf_summary, quantize_gguf, verify_ggufs, write_gguf
from so8t_kedro.models.bundles import BaseModelBundle
from so8t_kedro.models.embedded import STOP_TOKENS
from so8t_kedro.models.selection import ModelReference
from so8t_kedro.reporting import html_report
from so8t_kedro.serve import (
    japanese_performance_report,
)

logger = logging.getLogger(__name__)


class ExportVerificationError(RuntimeError):
    """An exported model does not reproduce the model it was exported from."""


def held_out_texts(thinking_sft_dataset: pd.DataFrame, params: Mapping[str, Any]) -> list[str]:
    """The first ``n_prompts`` whole /think chat texts (system, user, assistant turns) of the
    split ``split``, in id order: samples training never saw, in the layout the model runs on.
    """
    split, count = str(params["split"]), int(params["n_prompts"])
    rows = thinking_sft_dataset[thinking_sft_dataset["split"] == split].sort_values("id")
    if rows.empty:
        raise ValueError(f"thinking_sft_dataset has no {split!r} samples to verify on; "
                         f"splits present: {sorted(thinking_sft_dataset['split'].unique())}")
    return rows["text"].head(count).tolist()


# ------------------------------------------------------------------------------ bake


def bake_so8t_model(model: ModelReference, bake_params: Mapping[str, Any]) -> BaseModelBundle:
    """The base with the adapter's LoRA merged and its SO8T gates folded into ``o_proj``.

    ``model`` is ``so8t_adapter`` (as the catalog loads it) on the base it was trained on.
    ``so8t.bake_from_adapter`` reloads the base unquantised (LoRA merged in fp32, gates
    folded in fp64) and casts once to ``bake_params["dtype"]`` (null: the base's own). The
    result is a stock ``Phi3ForCausalLM``, saved with the base's tokenizer, chat template,
    generation config and SentencePiece ``tokenizer.model`` (which GGUF conversion reads).
    """
    base_dir, adapter_dir = model.base_dir, model.adapter_dir
    baked = so8t.bake_from_adapter(base_dir, adapter_dir, dtype=bake_params["dtype"])
    tokenizer = AutoTokenizer.from_pretrained(base_dir, local_files_only=True)
    logger.info("Baked %s + %s into a stock %s (%s)", base_dir, adapter_dir,
                type(baked).__name__, baked.dtype)
    return BaseModelBundle(baked, tokenizer)


def verify_bake(thinking_sft_dataset: pd.DataFrame, model: ModelReference,
                baked_model_dir: Path, bake_params: Mapping[str, Any],
                verify_params: Mapping[str, Any]) -> dict[str, Any]:
    """Logits of the gated model (``model``: base + adapter, loaded as evaluation scores it)
    against the baked model's, on held-out /think texts: max |Δlogit|, top-1 agreement,
    tokens compared.

    Raises :class:`ExportVerificationError` when max |Δlogit| exceeds
    ``bake_params["tolerance"]``: the baked model would then not be the model evaluated.
    """
    base_dir, adapter_dir = model.base_dir, model.adapter_dir
    texts = held_out_texts(thinking_sft_dataset, verify_params)
    device = verify_params["device"]
    gated, tokenizer = load_scoring_model(base_dir, adapter_dir, device=device)
    baked, _ = load_scoring_model(baked_model_dir, device=device)
    batch = tokenizer(texts, return_tensors="pt", padding=True, truncation=True,
                      max_length=int(verify_params["max_tokens"]))
    result = so8t.verify_bake(gated, baked, batch["input_ids"], batch["attention_mask"])
    tolerance = float(bake_params["tolerance"])
    report = {
        **result,
        "tolerance": tolerance,
        "baked_dtype": str(AutoConfig.from_pretrained(baked_model_dir).dtype).removeprefix(
            "torch."),
        "compute_dtype": str(next(baked.parameters()).dtype).removeprefix("torch."),
        "device": str(next(baked.parameters()).device),
        "split": str(verify_params["split"]),
        "n_texts": len(texts),
        "base_model_dir": str(base_dir),
        "adapter_dir": str(adapter_dir),
        "baked_model_dir": str(baked_model_dir),
    }
    logger.info("Bake check on %d tokens: max |Δlogit| %.3g (tolerance %.3g), top-1 "
                "agreement %.4f", result["n_tokens"], result["max_abs_logit_diff"], tolerance,
                result["top1_agreement"])
    if result["max_abs_logit_diff"] > tolerance:
        raise ExportVerificationError(
            f"baked model differs from the gated model: max |Δlogit| "
            f"{result['max_abs_logit_diff']:.3g} > export.bake.tolerance {tolerance:.3g} "
            f"(top-1 agreement {result['top1_agreement']:.4f}, {result['n_tokens']} tokens, "
            f"baked dtype {report['baked_dtype']})")
    return report


# ------------------------------------------------------------------------------ GGUF


def _sha256(path: Path) -> str:
    with path.open("rb") as stream:
        return hashlib.file_digest(stream, "sha256").hexdigest()


def _gguf_path(model_name: str, gguf_params: Mapping[str, Any], outtype: str) -> Path:
    return Path(gguf_params["output_dir"]) / model_name / f"{model_name}-{outtype}.gguf"


def _gguf_manifest(path: Path, outtype: str, source: Path,
                   bake_max_abs_logit_diff: float) -> dict[str, Any]:
    """The file's summary, its SHA-256, what it was made from and that bake's check."""
    manifest = {"outtype": outtype, "source": str(source), "sha256": _sha256(path),
                "bake_max_abs_logit_diff": bake_max_abs_logit_diff,
                **gguf_summary(path)}
    logger.info("Wrote %s (%s, %.1f MB, %d tensors)", path, outtype,
                manifest["file_size_bytes"] / 1e6, manifest["tensor_count"])
    return manifest


def _write_baked_gguf(baked_model_dir: Path, bake_verification: Mapping[str, Any],
                      model_name: str, gguf_params: Mapping[str, Any],
                      outtype: str) -> dict[str, Any]:
    path = write_gguf(baked_model_dir, _gguf_path(model_name, gguf_params, outtype), outtype)
    return _gguf_manifest(path, outtype, baked_model_dir,
                          bake_verification["max_abs_logit_diff"])


def write_gguf_f16(baked_model_dir: Path, bake_verification: Mapping[str, Any],
                   model_name: str, gguf_params: Mapping[str, Any]) -> dict[str, Any]:
    """The baked model as an F16 GGUF (the ``gguf`` package's writer); its manifest.

    Takes the bake check so that it runs only after the check passed: the files live in a
    fixed folder, and a failed bake must not overwrite the last good ones.
    """
    return _write_baked_gguf(baked_model_dir, bake_verification, model_name, gguf_params,
                             "F16")


def write_gguf_q8_0(baked_model_dir: Path, bake_verification: Mapping[str, Any],
                    model_name: str, gguf_params: Mapping[str, Any]) -> dict[str, Any]:
    """The baked model as a Q8_0 GGUF, quantised from its own weights (not from the F16
    file: one rounding instead of two); its manifest. After the bake check, as F16."""
    return _write_baked_gguf(baked_model_dir, bake_verification, model_name, gguf_params,
                             "Q8_0")


def quantize_gguf_q4_k_m(gguf_f16: Mapping[str, Any], model_name: str,
                         gguf_params: Mapping[str, Any]) -> dict[str, Any]:
    """Q4_K_M quantised from the F16 GGUF by llama.cpp's quantiser (the ``gguf`` package
    has no K-quant quantiser), as llama.cpp's own workflow does; its manifest."""
    source = Path(gguf_f16["path"])
    path = quantize_gguf(source, _gguf_path(model_name, gguf_params, "Q4_K_M"), "Q4_K_M")
    return _gguf_manifest(path, "Q4_K_M", source, gguf_f16["bake_max_abs_logit_diff"])


def _baked_source(gguf_f16: Mapping[str, Any], gguf_q8_0: Mapping[str, Any]) -> Path:
    """The baked model the F16 and Q8_0 files were written from (their manifests' source);
    Q4_K_M is quantised from the F16 file."""
    if gguf_f16["source"] != gguf_q8_0["source"]:
        raise ExportVerificationError(
            f"gguf_f16 and gguf_q8_0 were written from different baked models "
            f"({gguf_f16['source']} and {gguf_q8_0['source']}): load both from one export run")
    return Path(gguf_f16["source"])


def verify_gguf_files(gguf_f16: Mapping[str, Any], gguf_q8_0: Mapping[str, Any],
                      gguf_q4_k_m: Mapping[str, Any], thinking_sft_dataset: pd.DataFrame,
                      export_params: Mapping[str, Any]) -> dict[str, Any]:
    """Each GGUF loaded in llama.cpp against the baked model it was written from (the F16
    and Q8_0 manifests' ``source``) on the held-out texts: vocabulary, tokenisation and
    next-token logits (max / mean |Δlogit|, top-1 agreement).

    ``export_params`` is ``params:export``: ``verify`` chooses the texts, ``gguf`` the
    llama.cpp context and the F16 tolerance.

    Raises :class:`ExportVerificationError` when a file's vocabulary or tokenisation differs
    from the Hugging Face tokenizer's, or when the F16 file's max |Δlogit| exceeds
    ``export.gguf.f16_tolerance``. The quantised files' agreement is reported only: it
    measures the quantisation, not a conversion error. llama.cpp runs in child processes: a
    native crash raises ``NativeCrashError`` (the signal, the file), failing this node only.

    Returns the check with the manifests it checked by outtype (``gguf_verification``: what
    the report shows, so the report can be rendered again from persisted results alone).
    """
    verify_params, gguf_params = export_params["verify"], export_params["gguf"]
    baked_model_dir = _baked_source(gguf_f16, gguf_q8_0)
    texts = held_out_texts(thinking_sft_dataset, verify_params)
    n_ctx = int(gguf_params["n_ctx"])
    manifests = (gguf_f16, gguf_q8_0, gguf_q4_k_m)
    results = verify_ggufs([m["path"] for m in manifests], baked_model_dir, texts, n_ctx=n_ctx,
                           extra_buffer_types=str(gguf_params["extra_buffer_types"]))
    files = {m["outtype"]: result for m, result in zip(manifests, results, strict=True)}
    tolerance = float(gguf_params["f16_tolerance"])
    for outtype, result in files.items():
        logger.info("%s: vocabulary %s, tokenisation %s, max |Δlogit| %.3g, top-1 agreement "
                    "%.4f over %d positions", outtype, result["vocab_match"],
                    result["tokenization_match"], result["max_abs_logit_diff"],
                    result["top1_agreement"], result["n_positions"])
    problems = [f"{outtype}: vocabulary differs ({result['vocab_mismatches']} pieces, "
                f"n_vocab {result['n_vocab']} vs {result['hf_vocab_size']})"
                for outtype, result in files.items() if not result["vocab_match"]]
    problems += [f"{outtype}: llama.cpp tokenises {len(result['tokenization_mismatches'])} "
                 "texts differently from the Hugging Face tokenizer"
                 for outtype, result in files.items() if not result["tokenization_match"]]
    if files["F16"]["max_abs_logit_diff"] > tolerance:
        problems.append(f"F16: max |Δlogit| {files['F16']['max_abs_logit_diff']:.3g} > "
                        f"export.gguf.f16_tolerance {tolerance:.3g}")
    if problems:
        raise ExportVerificationError("GGUF files do not reproduce the baked model: "
                                      + "; ".join(problems))
    return {"f16_tolerance": tolerance, "split": str(verify_params["split"]),
            "n_texts": len(texts), "baked_model_dir": str(baked_model_dir), "files": files,
            "manifests": {m["outtype"]: m for m in manifests}}


# ------------------------------------------------------------------------- Ollama


def render_modelfile(gguf_file_name: str) -> str:
    """An Ollama Modelfile for a GGUF beside it, with Phi-3.5's chat layout.

    The template renders ``<|system|>\\n{system}<|end|>\\n<|user|>\\n{prompt}<|end|>\\n
    <|assistant|>\\n``, byte for byte what ``think.render_prompt`` trains on; generation
    stops on Phi-3.5's stop tokens (its ``generation_config``: ``<|end|>``, ``<|assistant|>``,
    ``<|endoftext|>``); the system prompt is the /think instruction.
    """
    template = (
        f"{{{{ if .System }}}}{tf.SYSTEM_TOKEN}\n{{{{ .System }}}}{tf.END_TOKEN}\n{{{{ end }}}}"
        f"{{{{ if .Prompt }}}}{tf.USER_TOKEN}\n{{{{ .Prompt }}}}{tf.END_TOKEN}\n{{{{ end }}}}"
        f"{tf.ASSISTANT_TOKEN}\n{{{{ .Response }}}}{tf.END_TOKEN}\n"
    )
    lines = [f"FROM ./{gguf_file_name}", f'TEMPLATE """{template}"""']
    lines += [f'PARAMETER stop "{token}"' for token in STOP_TOKENS]
    lines.append(f'SYSTEM """{tf.SYSTEM_PROMPT}"""')
    return "\n".join(lines) + "\n"


def write_ollama_modelfile(gguf_f16: Mapping[str, Any], gguf_q8_0: Mapping[str, Any],
                           gguf_q4_k_m: Mapping[str, Any],
                           ollama_params: Mapping[str, Any]) -> dict[str, Any]:
    """Write ``Modelfile`` beside the GGUF of quant ``ollama_params["quant"]``; return its
    path, text and the ``ollama create`` command that registers it."""
    by_type = {m["outtype"]: m for m in (gguf_f16, gguf_q8_0, gguf_q4_k_m)}
    quant = str(ollama_params["quant"])
    if quant not in by_type:
        raise ValueError(f"export.ollama.quant must be one of {sorted(by_type)}, got {quant!r}")
    gguf = Path(by_type[quant]["path"]).resolve()
    path = gguf.parent / "Modelfile"  # absolute: the command works from any directory
    content = render_modelfile(gguf.name)
    path.write_text(content, encoding="utf-8")
    command = ["ollama", "create", str(ollama_params["model"]), "-f", str(path)]
    logger.info("Wrote %s; register it with: %s", path, shlex.join(command))
    return {"path": str(path), "gguf": str(gguf), "quant": quant,
            "model": str(ollama_params["model"]), "command": shlex.join(command),
            "content": content}


def create_ollama_model(ollama_modelfile: Mapping[str, Any],
                        ollama_params: Mapping[str, Any]) -> dict[str, Any]:
    """``ollama create`` the model when ``ollama`` is on PATH; otherwise record the skip.

    Only this step depends on Ollama being installed: the GGUF files and the Modelfile are
    there either way, and the command is in the report to run later by hand.

    Returns the Modelfile with what ``ollama create`` did (``ollama_model``: what the report
    shows, so the report can be rendered again from persisted results alone).
    """
    return {**ollama_modelfile, **_ollama_create(ollama_modelfile, ollama_params)}


def _ollama_create(ollama_modelfile: Mapping[str, Any],
                   ollama_params: Mapping[str, Any]) -> dict[str, Any]:
    command = ollama_modelfile["command"]
    executable = shutil.which("ollama")
    if executable is None:
        logger.warning("ollama is not on PATH: skipped `%s`", command)
        return {"command": command, "ran": False, "skipped": "ollama not on PATH"}
    try:
        # cwd: the Modelfile's folder, so that its `FROM ./<file>` names the GGUF beside it
        # whether an Ollama version resolves it against the Modelfile or the working dir.
        completed = subprocess.run(
            [executable, "create", ollama_modelfile["model"], "-f", ollama_modelfile["path"]],
            check=True, capture_output=True, text=True,
            timeout=float(ollama_params["timeout_s"]), cwd=Path(ollama_modelfile["path"]).parent)
    except subprocess.CalledProcessError as error:
        raise RuntimeError(f"`{command}` failed with exit status {error.returncode}: "
                           f"{(error.stderr or error.stdout)[-2000:]}") from error
    logger.info("Created the Ollama model %s: `ollama run %s`", ollama_modelfile["model"],
                ollama_modelfile["model"])
    return {"command": command, "ran": True, "skipped": None,
            "output": (completed.stdout + completed.stderr)[-2000:]}


# ------------------------------------------------------------ Japanese performance


def measure_japanese_performance(model: ModelReference, baked_model_dir: Path,
                                 params: Mapping[str, Any]) -> pd.DataFrame:
    """The /think service's answers to Japanese requests from the original base (the one
    ``model``'s adapter was trained on) and from the baked model: latency, tokens/s, format
    health and decision per (model, prompt), on ``params["prompts"]``.
    """
    return japanese_performance_report({"original": model.base_dir,
                                        "so8t_baked": baked_model_dir},
                                       params["prompts"], max_new_tokens=int(params["max_new_tokens"]),
                                       device=params["device"])


# ---------------------------------------------------------------------------- report


def _sci(value: float) -> str:
    """Logit differences span 1e-7 (fp32) to 1 (4-bit): the report's 4 decimals hide them."""
    return f"{value:.3e}"


def _gguf_table(gguf_verification: Mapping[str, Any]) -> pd.DataFrame:
    rows = {}
    for outtype, manifest in gguf_verification["manifests"].items():
        check = gguf_verification["files"][outtype]
        rows[outtype] = {
            "file": Path(manifest["path"]).name,
            "size (MB)": manifest["file_size_bytes"] / 1e6,
            "tensors": manifest["tensor_count"],
            "tensor types": ", ".join(f"{t} × {n}" for t, n in manifest["tensor_types"].items()),
            "vocabulary": "match" if check["vocab_match"] else "DIFFERS",
            "tokenisation": "match" if check["tokenization_match"] else "DIFFERS",
            "max |Δlogit|": _sci(check["max_abs_logit_diff"]),
            "mean |Δlogit|": _sci(check["mean_abs_logit_diff"]),
            "top-1 agreement": check["top1_agreement"],
            "SHA-256": manifest["sha256"][:16] + "…",
        }
    return pd.DataFrame.from_dict(rows, orient="index")


def _performance_table(summary: Mapping[str, Any]) -> pd.DataFrame:
    table = pd.DataFrame.from_dict(summary, orient="index")
    table["decisions"] = table["decisions"].map(
        lambda counts: ", ".join(f"{label} {n}" for label, n in counts.items()))
    return table


def render_export_report(bake_verification: Mapping[str, Any],
                         gguf_verification: Mapping[str, Any], ollama_model: Mapping[str, Any],
                         japanese_performance: pd.DataFrame,
                         japanese_performance_summary: Mapping[str, Any]) -> str:
    """One HTML page: the bake check, the GGUF files and their checks (``gguf_verification``,
    from :func:`verify_gguf_files`), the Modelfile and its ``ollama create`` command
    (``ollama_model``, from :func:`create_ollama_model`), and the Japanese performance of
    original vs baked. Every input is persisted: ``--nodes=render_export_report`` renders it
    again without re-exporting."""
    bake = bake_verification
    bake_table = pd.DataFrame({"value": {
        "max |Δlogit| (gated vs baked)": _sci(bake["max_abs_logit_diff"]),
        "tolerance (export.bake.tolerance)": _sci(bake["tolerance"]),
        "top-1 agreement": f"{bake['top1_agreement']:.4f}",
        "tokens compared": bake["n_tokens"],
        f"{bake['split']} texts": bake["n_texts"],
        "baked dtype / compared in": f"{bake['baked_dtype']} / {bake['compute_dtype']} on "
                                     f"{bake['device']}",
    }})
    if ollama_model["ran"]:
        ollama_status = f"Created the Ollama model: ollama run {ollama_model['model']}"
    else:
        ollama_status = (f"ollama create was skipped ({ollama_model['skipped']}); run the "
                         "command above where Ollama is installed.")
    gguf_folder = Path(ollama_model["path"]).parent
    return html_report.page("SO8T export", [
        html_report.section(
            "Baked model",
            html_report.paragraph(f"LoRA merged and SO8T rotations folded into o_proj: a "
                                  f"stock Phi3ForCausalLM at {bake['baked_model_dir']} "
                                  f"(base {bake['base_model_dir']}, adapter "
                                  f"{bake['adapter_dir']})."),
            html_report.table(bake_table)),
        html_report.section(
            "GGUF files",
            html_report.paragraph(f"In {gguf_folder}. Each file loaded in llama.cpp and "
                                  "compared with the baked model (fp32) on "
                                  f"{gguf_verification['n_texts']} {gguf_verification['split']} "
                                  "texts; the F16 file must stay within "
                                  f"{_sci(gguf_verification['f16_tolerance'])}."),
            html_report.table(_gguf_table(gguf_verification))),
        html_report.section(
            "Ollama",
            html_report.paragraph(f"Modelfile ({ollama_model['path']}):"),
            f"<pre>{html_report.escape(ollama_model['content'])}</pre>",
            html_report.paragraph("Register it with:"),
            f"<pre><code>{html_report.escape(ollama_model['command'])}</code></pre>",
            html_report.paragraph(ollama_status)),
        html_report.section(
            "Japanese performance: original vs baked",
            html_report.table(_performance_table(japanese_performance_summary)),
            html_report.table(japanese_performance.set_index(["model", "prompt_id"]))),
    ])
