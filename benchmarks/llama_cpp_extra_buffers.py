"""What llama.cpp's extra buffer types (AMX / "repack" weight layouts) cost when they are off.

The project loads every GGUF with extra buffer types off unless
``export.gguf.extra_buffer_types`` says ``auto`` (probed once per machine) or ``on``: a CPU
that advertises AMX which the OS or hypervisor does not enable dies on them. This script
measures, on this machine, prompt evaluation and greedy generation speed of Q8_0 and Q4_K_M
(and F16 for scale) with them off and on, each in its own child process, so a crash is a
row of the table ("crashed: SIGILL"), not the end of the script.

The model is a randomly initialised Phi-3 wide enough for real K-quant blocks (rows of 256)
and for matrix kernels to matter: hidden 1024, 4 layers, MLP 2816, 16 heads, the embedded
tokenizer (vocabulary 4000). Its weights are random, so only speed is measured.

    python benchmarks/llama_cpp_extra_buffers.py              # 3 rounds, 64 new tokens
    python benchmarks/llama_cpp_extra_buffers.py --rounds 5 --new-tokens 128
"""

from __future__ import annotations

import argparse
import json
import platform
import signal
import statistics
import tempfile
import time
from pathlib import Path

from so8t_kedro.export.gguf import quantize_gguf, write_gguf
from so8t_kedro.export.llama_process import LlamaProcess, NativeCrashError
from so8t_kedro.models.embedded import embedded_base_model
from so8t_kedro.models.loading import save_base_model

SEED_FILE = Path(__file__).resolve().parents[1] / "data/01_raw/so8t_seed_dataset.jsonl"
# Every key embedded_base_model reads: this benchmark's own model, not base_model.embedded.
MODEL = {"vocab_size": 4000, "hidden_size": 1024, "num_hidden_layers": 4,
         "num_attention_heads": 16, "num_key_value_heads": 16, "intermediate_size": 2816,
         "max_position_embeddings": 1024, "seed": 0, "placeholder_tokens": []}
PROMPT_TOKENS = 256


def build_files(folder: Path) -> dict[str, Path]:
    texts = [json.loads(line)["text"] for line in SEED_FILE.read_text(encoding="utf-8").splitlines()]
    model, tokenizer = embedded_base_model(texts, MODEL)
    save_base_model(model, tokenizer, folder / "model")
    f16 = write_gguf(folder / "model", folder / "bench-F16.gguf", "F16")
    return {"F16": f16,
            "Q8_0": write_gguf(folder / "model", folder / "bench-Q8_0.gguf", "Q8_0"),
            "Q4_K_M": quantize_gguf(f16, folder / "bench-Q4_K_M.gguf", "Q4_K_M")}


def measure(path: Path, mode: str, rounds: int, new_tokens: int) -> dict[str, float | str]:
    """Median prompt-evaluation and generation tokens/s over ``rounds``, in one child."""
    prompt = [1 + (i * 37) % 3990 for i in range(PROMPT_TOKENS)]
    prompt_rates, generation_rates = [], []
    try:
        with LlamaProcess(path, extra_buffer_types=mode, operation="benchmark",
                          n_ctx=PROMPT_TOKENS + new_tokens + 8, n_batch=PROMPT_TOKENS,
                          n_threads=2, n_threads_batch=2) as llm:
            llm.call("generate", prompt[:8], 4, frozenset())  # warm-up (repacking, caches)
            for _ in range(rounds):
                began = time.perf_counter()
                llm.call("eval_logits", prompt)
                prompt_rates.append(PROMPT_TOKENS / (time.perf_counter() - began))
                began = time.perf_counter()
                produced = llm.call("generate", prompt[:8], new_tokens, frozenset())
                generation_rates.append(len(produced) / (time.perf_counter() - began))
    except NativeCrashError as crash:
        how = (signal.Signals(-crash.exitcode).name if crash.exitcode and crash.exitcode < 0
               else f"exit {crash.exitcode}")
        return {"prompt tok/s": f"crashed: {how}", "generation tok/s": "crashed"}
    return {"prompt tok/s": round(statistics.median(prompt_rates), 1),
            "generation tok/s": round(statistics.median(generation_rates), 1)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--new-tokens", type=int, default=64)
    args = parser.parse_args()
    import llama_cpp

    print(f"machine: {platform.processor() or platform.machine()}, llama-cpp-python "
          f"{llama_cpp.__version__}")
    print(llama_cpp.llama_print_system_info().decode().strip())
    with tempfile.TemporaryDirectory() as folder:
        files = build_files(Path(folder))
        print(f"\n{'file':8} {'MB':>6} {'extra buffers':>13} {'prompt tok/s':>22} "
              f"{'generation tok/s':>17}")
        for outtype, path in files.items():
            for mode in ("off", "on"):
                row = measure(path, mode, args.rounds, args.new_tokens)
                print(f"{outtype:8} {path.stat().st_size / 1e6:6.1f} {mode:>13} "
                      f"{row['prompt tok/s']!s:>22} {row['generation tok/s']!s:>17}")


if __name__ == "__main__":
    main()
