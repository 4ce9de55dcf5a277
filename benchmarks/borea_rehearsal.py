"""Borea's width rehearsed on this machine: a randomly initialised ``Phi3ForCausalLM`` with
Phi-3.5-mini-instruct's dimensions and RoPE (hidden 3072, 32 heads, MLP 8192, vocabulary
32064, LongRoPE to 131072 positions) but a few of its 32 layers, through the product's own
functions: training (8-bit and 4-bit QLoRA, gradient checkpointing, a few steps of Borea's
batch shape), bake, bake check, GGUF F16 / Q8_0 / Q4_K_M (real K-quants at this width) and
the llama.cpp checks. Prints time and peak memory per stage and the bytes per layer.

The settings are the ``rehearsal`` Kedro environment's (``conf/rehearsal/`` over
``conf/base``): ``rehearsal.phi3`` is the model, ``training`` Borea's recipe shortened,
``export`` the export settings. The tokenizer is the embedded one, trained on the seed
requests; the model's 32064 ids past it are GGUF ``[PADn]`` tokens, as Phi-3.5's own are.

Each stage runs in a fresh child process, so its peak RSS (the kernel's high-water mark)
is its own, not what an earlier stage left behind; ``RSS at start`` is the child after its
imports. llama.cpp (quantiser, checks) runs in grandchildren of its own: ``with children``
adds theirs (sampled every 50 ms). Sizes per layer are read from the files (the
checkpoint's ``model.layers.N.*``, the GGUFs' ``blk.N.*``). With two depths (``--layers 2
4``) time and memory with children are also fitted as fixed + per layer x layers and
extrapolated to Borea's 32 layers.

    python benchmarks/borea_rehearsal.py                  # 2 layers: stages, sizes per layer
    python benchmarks/borea_rehearsal.py --layers 2 4     # and time/memory fitted to 32 layers
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import resource
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("KEDRO_DISABLE_TELEMETRY", "1")

import pandas as pd
from seed_samples import PROJECT_ROOT, project_parameters, render_seed_samples

GIB = 2**30
MIB = 2**20
MODEL_NAME = "borea_rehearsal"
DTYPE_BYTES = {"BF16": 2, "F16": 2, "F32": 4}


def rehearsal_samples(per_label: int) -> pd.DataFrame:
    rows = pd.read_json(PROJECT_ROOT / "data/01_raw/so8t_seed_dataset.jsonl", lines=True,
                        dtype=False)
    return render_seed_samples(rows.groupby("label", sort=True).head(per_label)
                               .reset_index(drop=True))


def build_rehearsal_model(rehearsal: dict, embedded: dict, samples: pd.DataFrame,
                          out_dir: Path) -> dict:
    """The embedded tokenizer (trained on the train split's texts, as the pipeline's base
    is, with ``base_model.embedded``'s seed, length and PII placeholders as single tokens,
    and ``rehearsal.tokenizer_vocab_size``) and a random ``Phi3ForCausalLM`` of
    ``rehearsal.phi3``, saved in Borea's checkpoint dtype with ``save_base_model``."""
    import torch
    from transformers import Phi3Config, Phi3ForCausalLM

    from so8t_kedro.models.embedded import build_embedded_tokenizer
    from so8t_kedro.models.loading import save_base_model

    train = samples[samples["split"] == "train"]
    tokenizer = build_embedded_tokenizer(
        train["text"].tolist(), vocab_size=int(rehearsal["tokenizer_vocab_size"]),
        seed=embedded["seed"], model_max_length=embedded["max_position_embeddings"],
        placeholder_tokens=embedded["placeholder_tokens"])
    config = Phi3Config(**rehearsal["phi3"], bos_token_id=tokenizer.bos_token_id,
                        eos_token_id=tokenizer.eos_token_id,
                        pad_token_id=tokenizer.pad_token_id)
    torch.manual_seed(0)
    model = Phi3ForCausalLM(config).to(getattr(torch, rehearsal["checkpoint_dtype"]))
    save_base_model(model, tokenizer, out_dir)
    return {"parameters": sum(p.numel() for p in model.parameters()),
            "tokenizer tokens": len(tokenizer), "checkpoint MiB": folder_bytes(out_dir) / MIB}


def train(base_dir: Path, samples: pd.DataFrame, params: dict, out_dir: Path) -> dict:
    """``train_so8t`` as the train node calls it; the adapter saved as the node saves it."""
    from so8t_kedro.models.bundles import AdapterBundle
    from so8t_kedro.training.loop import train_so8t

    result = train_so8t(base_dir, samples, params, checkpoint_dir=out_dir / "checkpoints")
    AdapterBundle(result.model, result.tokenizer).save_pretrained(out_dir / "adapter")
    return {"steps": result.summary["optimizer_steps"],
            "trainable parameters": result.summary["trainable_parameters"],
            "last loss": round(float(result.history["loss"].iloc[-1]), 3),
            "adapter MiB": folder_bytes(out_dir / "adapter") / MIB}


def bake(base_dir: Path, adapter_dir: Path, params: dict, out_dir: Path) -> dict:
    from so8t_kedro.models.selection import resolve_catalog_adapter
    from so8t_kedro.pipelines.export.nodes import bake_so8t_model

    model = resolve_catalog_adapter(base_dir, adapter_dir, {"path": str(base_dir)})
    bake_so8t_model(model, params["export"]["bake"]).save_pretrained(out_dir)
    return {"baked MiB": folder_bytes(out_dir) / MIB}


def verify_bake(base_dir: Path, adapter_dir: Path, baked_dir: Path, samples: pd.DataFrame,
                params: dict) -> dict:
    from so8t_kedro.models.selection import resolve_catalog_adapter
    from so8t_kedro.pipelines.export.nodes import verify_bake as verify

    export = params["export"]
    model = resolve_catalog_adapter(base_dir, adapter_dir, {"path": str(base_dir)})
    report = verify(samples, model, baked_dir, export["bake"], export["verify"])
    return {"tokens": report["n_tokens"], "max |Δlogit|": report["max_abs_logit_diff"]}


def write_ggufs(baked_dir: Path, params: dict, out_dir: Path) -> dict:
    """F16 and Q8_0 by the project's writer, Q4_K_M by llama.cpp's quantiser from F16."""
    from so8t_kedro.pipelines.export.nodes import (
        quantize_gguf_q4_k_m,
        write_gguf_f16,
        write_gguf_q8_0,
    )

    gguf = {**params["export"]["gguf"], "output_dir": str(out_dir)}
    check = {"max_abs_logit_diff": None}
    f16 = write_gguf_f16(baked_dir, check, MODEL_NAME, gguf)
    q8 = write_gguf_q8_0(baked_dir, check, MODEL_NAME, gguf)
    q4 = quantize_gguf_q4_k_m(f16, MODEL_NAME, gguf)
    return {m["outtype"]: m for m in (f16, q8, q4)}


def verify_ggufs(manifests: dict, samples: pd.DataFrame, params: dict) -> dict:
    from so8t_kedro.pipelines.export.nodes import verify_gguf_files

    export = params["export"]
    # checked against the baked model the manifests name as their source
    report = verify_gguf_files(manifests["F16"], manifests["Q8_0"], manifests["Q4_K_M"],
                               samples, export)
    return {outtype: {"vocab": r["vocab_match"], "tokens": r["tokenization_match"],
                      "max |Δlogit|": round(r["max_abs_logit_diff"], 3)}
            for outtype, r in report["files"].items()}


def _rounded(value):
    """Floats to 4 significant digits, in nested dicts too, for printing."""
    if isinstance(value, dict):
        return {key: _rounded(item) for key, item in value.items()}
    return float(f"{value:.4g}") if isinstance(value, float) else value


def folder_bytes(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())


def _measured(function, *args) -> dict:
    """Run in a child: ``function(*args)`` with its wall time and memory. Peak RSS is the
    kernel's high-water mark of this process; the peak with its children (llama.cpp's)
    is sampled every 50 ms (the kernel's figure for children would count this process's
    pages at each fork)."""
    import threading

    import psutil
    import torch

    torch.set_num_threads(2)
    process = psutil.Process()
    start_rss = process.memory_info().rss
    tree_peak = [start_rss]
    done = threading.Event()

    def sample() -> None:
        while not done.wait(0.05):
            total = process.memory_info().rss
            for child in process.children(recursive=True):
                try:
                    total += child.memory_info().rss
                except psutil.NoSuchProcess:
                    continue
            tree_peak[0] = max(tree_peak[0], total)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    began = time.perf_counter()
    result = function(*args)
    seconds = time.perf_counter() - began
    done.set()
    sampler.join()
    peak_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # KiB on Linux
    return {"result": result, "seconds": seconds, "start_rss": start_rss,
            "peak_rss": peak_rss, "tree_peak_rss": max(tree_peak[0], peak_rss)}


def in_child(function, *args) -> dict:
    with ProcessPoolExecutor(1, mp_context=get_context("spawn")) as pool:
        return pool.submit(_measured, function, *args).result()


def layer_bytes(base_dir: Path, gguf_paths: dict[str, str]) -> dict[str, dict[str, float]]:
    """Per file (checkpoint and each GGUF): bytes per layer (mean, smallest, largest over the
    layers: Q4_K_M gives some layers Q6_K where others get Q4_K) and of everything else."""
    import gguf
    from safetensors import safe_open

    tensors: dict[str, list[tuple[str, int]]] = {"checkpoint": []}
    for path in sorted(base_dir.glob("*.safetensors")):
        with safe_open(path, framework="pt") as handle:
            for name in handle.keys():  # noqa: SIM118 (safe_open is not iterable)
                tensor = handle.get_slice(name)
                nbytes = math.prod(tensor.get_shape()) * DTYPE_BYTES[tensor.get_dtype()]
                tensors["checkpoint"].append((name.removeprefix("model."), nbytes))
    for outtype, path in gguf_paths.items():
        tensors[outtype] = [(t.name.replace("blk.", "layers."), int(t.n_bytes))
                            for t in gguf.GGUFReader(path).tensors]
    sizes = {}
    for kind, named in tensors.items():
        per_layer: dict[str, int] = {}
        rest = 0
        for name, nbytes in named:
            if name.startswith("layers."):
                layer = name.split(".")[1]
                per_layer[layer] = per_layer.get(layer, 0) + nbytes
            else:
                rest += nbytes
        layers = list(per_layer.values())
        sizes[kind] = {"layer": sum(layers) / len(layers), "smallest layer": min(layers),
                       "largest layer": max(layers), "rest": rest}
    return sizes


def rehearse(layers: int, params: dict, samples: pd.DataFrame, work: Path) -> dict:
    """Every stage at ``layers`` layers; returns each stage's measurement."""
    rehearsal = {**params["rehearsal"],
                 "phi3": {**params["rehearsal"]["phi3"], "num_hidden_layers": layers}}
    work.mkdir(parents=True)
    base_dir = work / "base"
    stages = {"build base": in_child(build_rehearsal_model, rehearsal,
                                     params["base_model"]["embedded"], samples, base_dir)}
    for quantization in rehearsal["quantizations"]:
        training = {**params["training"], "quantization": quantization,
                    "checkpoint": {**params["training"]["checkpoint"],
                                   "dir": str(work / quantization)}}
        stages[f"train {quantization}"] = in_child(train, base_dir, samples, training,
                                                   work / quantization)
    adapter_dir = work / rehearsal["quantizations"][0] / "adapter"
    baked_dir = work / "baked"
    stages["bake"] = in_child(bake, base_dir, adapter_dir, params, baked_dir)
    stages["verify bake"] = in_child(verify_bake, base_dir, adapter_dir, baked_dir, samples,
                                     params)
    stages["write GGUF"] = in_child(write_ggufs, baked_dir, params, work / "gguf")
    manifests = stages["write GGUF"]["result"]
    stages["verify GGUF (llama.cpp)"] = in_child(verify_ggufs, manifests, samples,
                                                 params)
    sizes = layer_bytes(base_dir, {t: m["path"] for t, m in manifests.items()})
    sizes["checkpoint"]["file"] = sum(p.stat().st_size for p in base_dir.glob("*.safetensors"))
    for outtype, manifest in manifests.items():
        sizes[outtype]["file"] = manifest["file_size_bytes"]
    return {"layers": layers, "stages": stages, "sizes": sizes}


def fitted(values: dict[int, float], borea_layers: int) -> tuple[float, float]:
    """(per layer, extrapolated to ``borea_layers``) from a straight line through two depths."""
    (low, a), (high, b) = sorted(values.items())
    per_layer = (b - a) / (high - low)
    return per_layer, a + per_layer * (borea_layers - low)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--layers", type=int, nargs="+", default=[2],
                        help="depths to rehearse; two give the fit to Borea's layers")
    args = parser.parse_args()
    import llama_cpp
    import psutil

    params = project_parameters("rehearsal")
    borea = int(params["rehearsal"]["borea_layers"])
    samples = rehearsal_samples(int(params["rehearsal"]["samples_per_label"]))
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
          f"{psutil.virtual_memory().total / GIB:.0f} GiB RAM, llama-cpp-python "
          f"{llama_cpp.__version__}; load average at start "
          f"{' '.join(f'{x:.1f}' for x in os.getloadavg())}")
    print(f"samples: {samples['split'].value_counts().to_dict()}; training "
          f"{ {k: params['training'][k] for k in ('batch_size', 'gradient_accumulation_steps', 'max_seq_length', 'gradient_checkpointing')} }")
    runs = {}
    with tempfile.TemporaryDirectory(prefix="borea_rehearsal_") as tmp:
        for layers in args.layers:
            began = time.perf_counter()
            runs[layers] = rehearse(layers, params, samples, Path(tmp) / f"layers{layers}")
            print(f"\n{layers} layers: {time.perf_counter() - began:.0f} s in all, load "
                  f"average {' '.join(f'{x:.1f}' for x in os.getloadavg())}")
            rows = [{"stage": name, "wall s": round(m["seconds"], 1),
                     "peak RSS GiB": round(m["peak_rss"] / GIB, 2),
                     "with children GiB": round(m["tree_peak_rss"] / GIB, 2),
                     "RSS at start GiB": round(m["start_rss"] / GIB, 2)}
                    for name, m in runs[layers]["stages"].items()]
            print(pd.DataFrame(rows).set_index("stage").to_string())
            for name, m in runs[layers]["stages"].items():
                result = m["result"] if name != "write GGUF" else {
                    t: f"{v['file_size_bytes'] / MIB:.0f} MiB, {v['tensor_types']}"
                    for t, v in m["result"].items()}
                print(f"  {name}: {json.dumps(_rounded(result), ensure_ascii=False)}")

    deepest = runs[max(runs)]
    print(f"\nbytes per layer (mean, and the range over the layers) and the rest (embeddings, "
          f"output head, final norm, rope factors) at {deepest['layers']} layers; {borea} "
          f"layers = the file + {borea - deepest['layers']} x the mean:")
    size_rows = [{"file": kind, "file MiB": round(s["file"] / MIB, 1),
                  "per layer MiB": round(s["layer"] / MIB, 1),
                  "layers MiB": f"{s['smallest layer'] / MIB:.1f}-{s['largest layer'] / MIB:.1f}",
                  "rest MiB": round(s["rest"] / MIB, 1),
                  f"{borea} layers GiB": round(
                      (s["file"] + (borea - deepest["layers"]) * s["layer"]) / GIB, 2)}
                 for kind, s in deepest["sizes"].items()]
    print(pd.DataFrame(size_rows).set_index("file").to_string())
    if len(runs) < 2:
        return
    low, high = min(runs), max(runs)
    print(f"\ntime and peak RSS with children fitted as fixed + per layer x layers through "
          f"{low} and {high} layers, extrapolated to {borea}:")
    fit_rows = []
    for stage in runs[low]["stages"]:
        row = {"stage": stage}
        for key, scale, unit in (("seconds", 1, "s"), ("tree_peak_rss", GIB, "GiB")):
            per_layer, extrapolated = fitted(
                {n: runs[n]["stages"][stage][key] / scale for n in (low, high)}, borea)
            row[f"{unit} per layer"] = round(per_layer, 3)
            row[f"{unit} at {borea}"] = round(extrapolated, 1)
        fit_rows.append(row)
    print(pd.DataFrame(fit_rows).set_index("stage").to_string())


if __name__ == "__main__":
    main()
