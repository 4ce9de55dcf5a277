"""Overhead of SO8T gates: training throughput with LoRA vs LoRA + gates, and baked latency.

Builds a small random Phi-3 from a config (nothing is downloaded), then in one run:

1. forward+backward tokens/s of LoRA (r=16 on qkv/o/gate_up/down) vs LoRA + SO8T gates on
   every layer (target: overhead <= 3 %);
2. no-grad forward latency of the baked model vs the original base model (target ratio 1.00);
3. a breakdown of the gate's own cost (R = exp(A) for all blocks vs the rotation itself).

The two variants of each measurement are interleaved repeat by repeat (A, B, A, B, ...) so
that drift in machine load hits both equally; medians are reported.

    python benchmarks/so8t_overhead.py                      # hidden 256, 4 layers, seq 128, batch 4
    python benchmarks/so8t_overhead.py --hidden 1024 --layers 8 --device cuda --dtype bfloat16
"""

from __future__ import annotations

import argparse
import copy
import os
import statistics
import time
import warnings

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch
from peft import LoraConfig, get_peft_model
from transformers import Phi3Config, Phi3ForCausalLM

from so8t_kedro.so8t import (
    SO8TConfig,
    bake,
    install_gates,
    list_gates,
    verify_bake,
)


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--hidden", type=int, default=256)
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--heads", type=int, default=4)
    parser.add_argument("--intermediate", type=int, default=None, help="default: 8/3 x hidden")
    parser.add_argument("--vocab", type=int, default=2048)
    parser.add_argument("--seq", type=int, default=128)
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--lora-r", type=int, default=16)
    parser.add_argument("--parametrization", default="exp", choices=["exp", "cayley", "taylor"])
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--dtype", default="float32", choices=["float32", "bfloat16", "float16"])
    parser.add_argument("--threads", type=int, default=None, help="torch.set_num_threads")
    parser.add_argument("--seed", type=int, default=0)
    return parser.parse_args()


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(fn, device: torch.device) -> float:
    sync(device)
    start = time.perf_counter()
    fn()
    sync(device)
    return time.perf_counter() - start


def interleaved(fns: dict[str, callable], device, warmup: int, repeats: int) -> dict[str, list]:
    for _ in range(warmup):
        for fn in fns.values():
            fn()
    times = {name: [] for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            times[name].append(timed(fn, device))
    return times


def main() -> None:
    args = parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    warnings.filterwarnings("ignore")
    device = torch.device(args.device)
    dtype = getattr(torch, args.dtype)
    intermediate = args.intermediate or (args.hidden * 8 // 3 // 8) * 8
    config = Phi3Config(
        vocab_size=args.vocab,
        hidden_size=args.hidden,
        intermediate_size=intermediate,
        num_hidden_layers=args.layers,
        num_attention_heads=args.heads,
        max_position_embeddings=max(args.seq, 128),
        pad_token_id=0,
        bos_token_id=1,
        eos_token_id=2,
    )
    torch.manual_seed(args.seed)
    base = Phi3ForCausalLM(config).to(device=device, dtype=dtype).eval()
    original = Phi3ForCausalLM(config).to(device=device, dtype=dtype).eval()
    original.load_state_dict(base.state_dict())
    gen = torch.Generator().manual_seed(args.seed + 1)
    input_ids = torch.randint(3, args.vocab, (args.batch, args.seq), generator=gen).to(device)
    tokens = args.batch * args.seq

    print(
        f"device={device} ({torch.get_num_threads()} threads)"
        if device.type == "cpu"
        else f"device={torch.cuda.get_device_name(device)}"
    )
    print(
        f"torch {torch.__version__}, dtype={args.dtype}; Phi-3 hidden={args.hidden} "
        f"layers={args.layers} heads={args.heads} intermediate={intermediate} "
        f"vocab={args.vocab}; batch={args.batch} seq={args.seq}; LoRA r={args.lora_r}; "
        f"gates on all layers ({args.parametrization}); warmup={args.warmup} "
        f"repeats={args.repeats} (interleaved, median)"
    )

    # ---------------------------------------------------------------- 1. training step
    model = get_peft_model(
        base,
        LoraConfig(
            r=args.lora_r,
            lora_alpha=2 * args.lora_r,
            lora_dropout=0.0,
            target_modules=["qkv_proj", "o_proj", "gate_up_proj", "down_proj"],
        ),
    )
    with torch.no_grad():
        for name, param in model.named_parameters():
            if "lora_B" in name:
                param.normal_(0, 0.02)
    model.train()
    gated = copy.deepcopy(model)  # same base, same LoRA weights
    install_gates(gated, SO8TConfig(layer_indices=None, parametrization=args.parametrization))
    gated.train()

    def step(m):
        def run():
            m.zero_grad(set_to_none=True)
            m(input_ids=input_ids, labels=input_ids).loss.backward()

        return run

    train = interleaved(
        {"lora": step(model), "lora+gates": step(gated)}, device, args.warmup, args.repeats
    )
    lora_t = statistics.median(train["lora"])
    gated_t = statistics.median(train["lora+gates"])
    print("\n[train fwd+bwd]")
    print(f"  LoRA          : {tokens / lora_t:10.0f} tokens/s  ({lora_t * 1e3:8.2f} ms/step)")
    print(f"  LoRA + gates  : {tokens / gated_t:10.0f} tokens/s  ({gated_t * 1e3:8.2f} ms/step)")
    print(
        f"  throughput ratio (gates/LoRA) = {lora_t / gated_t:.4f}   "
        f"overhead = {100 * (gated_t / lora_t - 1):+.2f} %   (target <= 3 %)"
    )

    # ---------------------------------------------------------------- 3. gate cost breakdown
    gates = list(list_gates(gated).values())
    attn_out = torch.randn(
        args.batch, args.seq, args.hidden, device=device, dtype=dtype, requires_grad=True
    )

    def rotations_only():
        sum(g.rotation().sum() for g in gates).backward()

    def gates_only():
        sum(g(attn_out).float().sum() for g in gates).backward()

    parts = interleaved(
        {"R": rotations_only, "gates": gates_only}, device, args.warmup, args.repeats
    )
    r_t = statistics.median(parts["R"])
    g_t = statistics.median(parts["gates"])
    print(
        f"  breakdown, all {len(gates)} gates fwd+bwd in isolation: {g_t * 1e3:.2f} ms, of "
        f"which computing R (matrix exp of {gates[0].num_blocks} blocks x {len(gates)}) "
        f"{r_t * 1e3:.2f} ms; the measured step difference is "
        f"{(gated_t - lora_t) * 1e3:.2f} ms"
    )

    # ---------------------------------------------------------------- 2. baked inference
    del model
    gated.eval()
    baked = bake(gated)
    report = verify_bake(gated, baked, input_ids)
    del gated

    def infer(m):
        def run():
            with torch.no_grad():
                m(input_ids=input_ids)

        return run

    inference = interleaved(
        {"original": infer(original), "baked": infer(baked)}, device, args.warmup, args.repeats
    )
    orig_t = statistics.median(inference["original"])
    baked_t = statistics.median(inference["baked"])
    print("\n[inference, no-grad forward]")
    print(f"  original      : {orig_t * 1e3:8.2f} ms/batch")
    print(f"  baked         : {baked_t * 1e3:8.2f} ms/batch")
    print(f"  latency ratio (baked/original) = {baked_t / orig_t:.4f}   (target 1.00)")
    print(
        f"  bake check vs gated model: max |dlogit| = {report['max_abs_logit_diff']:.2e}, "
        f"top-1 agreement = {report['top1_agreement']:.4f} over {report['n_tokens']} tokens"
    )


if __name__ == "__main__":
    main()
