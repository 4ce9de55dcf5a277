"""The SO8T QLoRA training loop: one readable loop, no framework inside a framework.

Per optimiser step (``gradient_accumulation_steps`` micro-batches)::

    loss = cmd_weight · LM loss on completion tokens only
         + safety_weight · cross-entropy over the four labels' log-likelihoods (decision/classifier.py)
         + distill_weight · T² · KL(reference_T ‖ model_T) over the same four labels
         + λ(step) · PET(last hidden state)           (three-phase schedule)
         + orthogonal_reg · orthogonality(gates)

then gradient clipping, AdamW, a cosine schedule with warm-up. A step whose loss or gradient
is not finite is skipped (counted, with a warning); ``max_consecutive_skipped_steps`` of
them in a row stop the run with an emergency checkpoint and :class:`NonFiniteLossError`.

``accelerate`` places the model and runs mixed precision on GPU, so ``accelerate launch``
(DDP) works unchanged: each process takes its slice of every global batch, gradients are
all-reduced once per optimiser step (``no_sync`` on the other micro-batches), the scheduler
steps once per optimiser step, logged losses are the mean over processes, and a stop
request (a signal to any process) is reduced across processes after every micro-batch, so
all stop at the same one. Only the main process writes checkpoints and progress logs.
Rolling, epoch, final and emergency checkpoints come from ``checkpoint.py``; progress logs
from ``progress.py``. Framework-free (no kedro): the ``training`` pipeline's node calls
:func:`train_so8t`.
"""

from __future__ import annotations

import functools
import hashlib
import json
import logging
import math
import time
from collections.abc import Callable, Mapping, Sequence
from contextlib import ExitStack, nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from accelerate import Accelerator
from accelerate.tracking import GeneralTracker
from accelerate.utils import broadcast_object_list, set_seed
from peft import LoraConfig, get_peft_model, prepare_model_for_kbit_training
from transformers import get_cosine_schedule_with_warmup

from so8t_kedro.decision.classifier import (
    DecisionReadout,
    FourClassScorer,
    additive_mask,
    continuation_ids,
    decision_rows,
    float_dtype,
    split_token_ids,
)
from so8t_kedro.logging_filters import BNB_MATMUL_LOGGER, Int8CastNotice
from so8t_kedro.models.loading import load_base_model_for
from so8t_kedro.so8t import (
    PETSchedule,
    SO8TConfig,
    install_gates,
    list_gates,
    orthogonality_loss,
    pet_loss,
)
from so8t_kedro.training.checkpoint import (
    CheckpointManager,
    ShutdownFlag,
    TrainingInterrupted,
    graceful_shutdown,
    load,
    new_session_id,
    resolve_resume,
    session_finished,
)
from so8t_kedro.training.progress import PerformanceProfiler, ProgressLogger
from so8t_kedro.training.state import (
    DataPosition,
    TrainingState,
    capture_rng_state,
    restore_rng_state,
)

logger = logging.getLogger(__name__)

IGNORE_INDEX = -100
LOSS_TERMS = ("loss", "lm", "safety", "distill", "pet", "orthogonality")
HISTORY_COLUMNS = ("step", "epoch", "lr", "pet_lambda", "tokens", *LOSS_TERMS)


# --------------------------------------------------------------------------- data


@dataclass(frozen=True)
class Example:
    """One SFT sample, tokenised: ``labels`` mask the prompt (its first ``prompt_length``
    tokens) with ``IGNORE_INDEX``."""

    input_ids: list[int]
    labels: list[int]
    label_id: int
    prompt_length: int
    # The reference classifier's cross-fitted logits of the request (LABELS order), the
    # distillation target; None where the samples carry none.
    reference_scores: tuple[float, ...] | None = None


def tokenise_samples(samples: pd.DataFrame, tokenizer, max_seq_length: int,
                     scorer: FourClassScorer | None = None, *,
                     min_target_tokens: int) -> list[Example]:
    """Tokenise prompt + completion; the model learns only from the completion's tokens.

    A sample longer than ``max_seq_length`` keeps ``min_target_tokens`` of its completion
    (all of a shorter one), so that no sample is left without a target: its prompt loses
    tokens from the left, keeping the request's end and the assistant tag the completion
    follows (as the four-class probe does, :meth:`FourClassScorer.batch`), and its
    completion is cut at the end. With a ``scorer`` (the four-class term), the decision tail
    follows every sample in its row (:func:`collate`), so the cut leaves room for it, and the
    prompt is checked to take the tail as the probe does.
    """
    room = max_seq_length - (len(scorer.readout.tokens) if scorer is not None else 0)
    if not 0 < min_target_tokens < room:
        raise ValueError(
            f"training.min_target_tokens must be at least 1 and below the {room} tokens "
            f"max_seq_length {max_seq_length} leaves a sample"
            f"{' beside the decision tail' if scorer is not None else ''}; got "
            f"{min_target_tokens}: raise max_seq_length or lower min_target_tokens")
    examples, cut = [], 0
    has_reference = "reference_scores" in samples.columns
    for row in samples.itertuples(index=False):
        if scorer is not None:
            prompt_ids = scorer.prompt_ids(row.prompt)
            completion_ids = continuation_ids(tokenizer, prompt_ids, row.prompt, row.completion)
        else:
            prompt_ids, completion_ids = split_token_ids(tokenizer, row.prompt, row.completion)
        kept = min(len(completion_ids), max(min_target_tokens, room - len(prompt_ids)))
        start = max(0, len(prompt_ids) - (room - kept))
        cut += start > 0
        prompt_ids = prompt_ids[start:]
        ids = prompt_ids + completion_ids[:kept]
        labels = [IGNORE_INDEX] * len(prompt_ids) + completion_ids[:kept]
        # A row without scores holds None, or NaN once the table went through JSON.
        reference = row.reference_scores if has_reference else None
        examples.append(Example(ids, labels, int(row.label_id), len(prompt_ids),
                                tuple(map(float, reference))
                                if isinstance(reference, (list, tuple, np.ndarray)) else None))
    if cut:
        logger.info("training: %d of %d prompts lost tokens from the left to fit "
                    "max_seq_length %d with min_target_tokens %d", cut, len(examples),
                    max_seq_length, min_target_tokens)
    return examples


def collate(examples: Sequence[Example], pad_id: int,
            readout: DecisionReadout | None = None) -> dict[str, torch.Tensor]:
    """Left-pad a micro-batch (:func:`so8t_kedro.decision.classifier.decision_rows`), each sample
    followed by ``readout``'s decision tail when given.

    ``attention_mask`` is the 2-D mask of the samples' real tokens (padding and tail are
    0); with a tail, ``attend`` is the 4-D mask the model must use instead. Padding and the
    tail are masked out of the LM loss; position ids count real tokens only.
    """
    rows = decision_rows([e.input_ids for e in examples],
                         [e.prompt_length for e in examples], readout, pad_id)
    labels = torch.full(rows.input_ids.shape, IGNORE_INDEX, dtype=torch.long)
    end = rows.input_ids.shape[1] - rows.tail_length
    for i, e in enumerate(examples):
        labels[i, end - len(e.labels) : end] = torch.tensor(e.labels)
    batch = {"input_ids": rows.input_ids, "position_ids": rows.position_ids,
             "attention_mask": rows.token_mask, "labels": labels}
    if rows.attend is not None:
        batch["attend"] = rows.attend
    return batch


def batch_order(lengths: Sequence[int], batch_size: int, seed: int, epoch: int,
                group_batches: int) -> np.ndarray:
    """The sample order of ``epoch``, which depends only on (lengths, seed, epoch).

    A random permutation, cut into windows of ``group_batches`` batches; each window is
    sorted by length and cut into batches, and the batches are shuffled. Samples of like
    length share a batch, so little of it is padding (Hugging Face's ``group_by_length``
    does the same with its "megabatches"); ``group_batches`` 1 keeps the plain permutation.
    """
    rng = np.random.default_rng([seed, epoch])
    order = rng.permutation(len(lengths))
    if group_batches <= 1:
        return order
    lengths = np.asarray(lengths)
    window = batch_size * group_batches
    batches = []
    for start in range(0, len(order), window):
        chunk = order[start : start + window]
        # A stable sort, longest first: ties keep the permutation's order.
        chunk = chunk[np.argsort(-lengths[chunk], kind="stable")]
        batches += [chunk[i : i + batch_size] for i in range(0, len(chunk), batch_size)]
    # Keep a short last batch last: under `accelerate launch` it is the one dropped.
    full = [b for b in batches if len(b) == batch_size]
    short = [b for b in batches if len(b) < batch_size]
    return np.concatenate([full[i] for i in rng.permutation(len(full))] + short)


def lm_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Mean next-token cross-entropy over the unmasked (completion) tokens; 0 (with a zero
    gradient) for a batch that has none, which cross-entropy's mean would make NaN.

    The labels are shifted (padded at the end) instead of the logits being sliced, which
    would copy the [batch, seq, vocab] tensor.
    """
    next_labels = F.pad(labels, (0, 1), value=IGNORE_INDEX)[:, 1:].reshape(-1)
    total = F.cross_entropy(logits.float().reshape(-1, logits.shape[-1]), next_labels,
                            ignore_index=IGNORE_INDEX, reduction="sum")
    return total / (next_labels != IGNORE_INDEX).sum().clamp(min=1)


@torch.no_grad()
def mean_lm_loss(model, examples: Sequence[Example], pad_id: int, batch_size: int,
                 device: torch.device) -> float:
    """Token-weighted mean LM loss on completion tokens (e.g. the validation split)."""
    was_training = model.training
    model.eval()
    total, count = 0.0, 0
    for start in range(0, len(examples), batch_size):
        batch = {k: v.to(device) for k, v in
                 collate(examples[start : start + batch_size], pad_id).items()}
        logits = model(input_ids=batch["input_ids"], position_ids=batch["position_ids"],
                       attention_mask=batch["attention_mask"]).logits
        n = int((batch["labels"][:, 1:] != IGNORE_INDEX).sum())
        total += float(lm_loss(logits, batch["labels"])) * n
        count += n
    model.train(was_training)
    return total / max(count, 1)


# --------------------------------------------------------------------------- model


def load_training_base(base_model_dir: str | Path, params: Mapping[str, Any],
                       device: torch.device):
    """The base model as training will start from it (quantised per ``params``) + tokenizer."""
    return load_base_model_for(device, base_model_dir, quantization=params["quantization"],
                               bf16_on_cuda=bool(params["bf16"]),
                               trust_remote_code=bool(params["trust_remote_code"]))


def add_adapters(model, params: Mapping[str, Any]):
    """Prepare for k-bit training, add LoRA and (unless disabled) the SO8T gates."""
    checkpointing = bool(params["gradient_checkpointing"])
    if params["quantization"]:
        model = prepare_model_for_kbit_training(
            model, use_gradient_checkpointing=checkpointing,
            gradient_checkpointing_kwargs={"use_reentrant": False},
        )
    elif checkpointing:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        model.enable_input_require_grads()
    lora = params["lora"]
    model = get_peft_model(model, LoraConfig(
        r=lora["r"], lora_alpha=lora["alpha"], lora_dropout=lora["dropout"],
        target_modules=list(lora["target_modules"]), task_type="CAUSAL_LM",
        # Trained in full and saved with the adapter (the embedded default's embeddings and
        # output head); PEFT's merge puts them in the baked model.
        modules_to_save=list(lora["modules_to_save"] or []) or None,
    ))
    if params["uniform_attention_start"]:
        zero_query_weights(model)
    so8t = dict(params["so8t"])
    if so8t.pop("enabled"):
        install_gates(model, SO8TConfig.from_dict(so8t))  # after PEFT: θ stays trainable
    return model


def zero_query_weights(model) -> None:
    """Zero the query rows of every fully trained ``qkv_proj`` (``lora.modules_to_save``), so
    that each attention head starts as a uniform average over its prefix.

    The decision is read at the end of the probe; a head that averages the prefix hands it
    the bag of the request's tokens, the feature a linear classifier decides well from, which
    a small base pre-trained on a few thousand requests does not find by itself (README,
    "Training", measures it). Phi-3's fused projection holds the query rows first.
    """
    config = model.config
    query_rows = config.num_attention_heads * (config.hidden_size // config.num_attention_heads)
    zeroed = 0
    for name, module in model.named_modules():
        if name.endswith("qkv_proj.modules_to_save.default"):
            with torch.no_grad():
                module.weight[:query_rows] = 0
                if module.bias is not None:
                    module.bias[:query_rows] = 0
            zeroed += 1
    if not zeroed:
        raise ValueError("training.uniform_attention_start zeroes the query rows of the fully "
                         "trained qkv_proj: add qkv_proj to lora.modules_to_save (and remove "
                         "it from lora.target_modules)")


def trainable_state(model) -> dict[str, torch.Tensor]:
    """The trainable tensors (LoRA + gate θ) by parameter name, detached on the CPU."""
    return {n: p.detach().cpu().clone() for n, p in model.named_parameters() if p.requires_grad}


def load_trainable_state(model, state: Mapping[str, torch.Tensor]) -> None:
    params = dict(model.named_parameters())
    missing = sorted(n for n, p in params.items() if p.requires_grad and n not in state)
    unexpected = sorted(set(state) - set(params))
    if missing or unexpected:
        raise ValueError(f"checkpoint does not match the model: missing {missing[:5]}, "
                         f"unexpected {unexpected[:5]}")
    with torch.no_grad():
        for name, tensor in state.items():
            params[name].copy_(tensor.to(params[name].device))


# --------------------------------------------------------------------------- resume


# The training parameters a resumed run must share with the checkpoint's run to continue it
# exactly: they fix the data order and position (seed, batch shape, processes, epochs), the
# samples' tokens, the optimiser and schedule, and the trainable tensors' shapes. The loss
# weights, logging and checkpoint settings may change between runs.
FINGERPRINT_PARAMS = (
    "seed", "batch_size", "gradient_accumulation_steps", "epochs", "max_steps",
    "max_seq_length", "min_target_tokens", "length_group_batches", "learning_rate",
    "weight_decay", "warmup_ratio", "max_grad_norm", "quantization", "lora", "so8t",
    "uniform_attention_start",
)
# A base model is known by its config and its weight files' names, sizes and first and last
# MiB: enough to tell two checkpoints of one architecture apart, without reading 7 GB.
_SAMPLE_BYTES = 1 << 20


def base_model_identity(base_model_dir: str | Path) -> str:
    """A digest of the base model directory's config and weight files (not its path, which
    a moved or rebuilt-identical model may change)."""
    digest = hashlib.sha256()
    root = Path(base_model_dir)
    for path in sorted(root.iterdir()):
        if path.name == "config.json":
            digest.update(path.read_bytes())
        elif path.suffix in (".safetensors", ".bin"):
            size = path.stat().st_size
            digest.update(f"{path.name}:{size}".encode())
            with open(path, "rb") as f:
                digest.update(f.read(_SAMPLE_BYTES))
                f.seek(max(0, size - _SAMPLE_BYTES))
                digest.update(f.read(_SAMPLE_BYTES))
    return digest.hexdigest()


def examples_digest(examples: Sequence[Example]) -> str:
    """A digest of the tokenised training samples, in order (text, tokenizer and cut)."""
    digest = hashlib.sha256()
    for e in examples:
        digest.update(json.dumps([e.input_ids, e.labels, e.label_id, e.prompt_length,
                                  e.reference_scores]).encode())
    return digest.hexdigest()


def run_fingerprint(params: Mapping[str, Any], base_model_dir: str | Path,
                    train: Sequence[Example], num_processes: int) -> dict[str, Any]:
    """What a checkpoint must share with this run to be resumed by it (checkpoint.py's
    :func:`~so8t_kedro.training.checkpoint.resolve_resume` compares them field by field)."""
    return {**{name: params.get(name) for name in FINGERPRINT_PARAMS},
            "num_processes": num_processes,
            "base_model": base_model_identity(base_model_dir),
            "train_data": examples_digest(train)}


# --------------------------------------------------------------------------- loop


class NonFiniteLossError(RuntimeError):
    """``max_consecutive_skipped_steps`` optimiser steps in a row had a non-finite loss or
    gradient; an emergency checkpoint holds the last finite state."""


def batches_per_epoch(n_samples: int, batch_size: int, accumulation: int,
                      world: int = 1) -> tuple[int, int]:
    """``(micro-batches, optimiser steps)`` of one epoch of ``n_samples`` on each of ``world``
    processes. Under `accelerate launch` every process must run the same number of
    micro-batches, so with several processes the last incomplete global batch is dropped; a
    single process keeps every sample."""
    micro = math.ceil(n_samples / batch_size) if world == 1 else n_samples // (batch_size * world)
    return micro, math.ceil(micro / accumulation)


def step_seed(seed: int, rank: int, epoch: int, micro: int) -> int:
    """The seed of the optimiser step that starts at micro-batch ``micro`` of ``epoch`` on
    process ``rank``: randomness (dropout) depends on the data position alone, so a run
    resumed anywhere draws on every process what the uninterrupted run drew."""
    return int(np.random.SeedSequence([seed, rank, epoch, micro]).generate_state(1)[0])


@dataclass(frozen=True)
class StepReport:
    """What ``on_step`` sees after each optimiser step: the step, its mean loss terms, and
    the model (unwrapped, in train mode) with its tokenizer, for in-training evaluation."""

    step: int
    epoch: int
    losses: dict[str, float]
    model: Any
    tokenizer: Any


@dataclass
class TrainResult:
    model: Any  # the PeftModel with gates, in eval mode
    tokenizer: Any
    history: pd.DataFrame  # one row per optimiser step
    summary: dict[str, Any]
    session_dir: Path


def _quiet_int8_casts(func):
    """Run ``func`` with :class:`Int8CastNotice` on bitsandbytes' logger, also outside Kedro."""

    @functools.wraps(func)
    def wrapper(*args, **kwargs):
        bnb_logger = logging.getLogger(BNB_MATMUL_LOGGER)
        notice = Int8CastNotice()
        bnb_logger.addFilter(notice)
        try:
            return func(*args, **kwargs)
        finally:
            bnb_logger.removeFilter(notice)

    return wrapper


@_quiet_int8_casts
def train_so8t(
    base_model_dir: str | Path,
    samples: pd.DataFrame,
    params: Mapping[str, Any],
    *,
    checkpoint_dir: str | Path,
    shutdown: ShutdownFlag | None = None,
    on_step: Callable[[StepReport], None] | None = None,
    trackers: Sequence[GeneralTracker] = (),
    clock: Callable[[], float] = time.monotonic,
) -> TrainResult:
    """Train LoRA + SO8T gates on the ``split == "train"`` rows of the SFT ``samples``.

    Args:
        base_model_dir: a Hugging Face Phi-3 directory (the embedded default or a real one).
        samples: the thinking_sft dataset (``prompt``, ``completion``, ``label_id``,
            ``language``, ``split``).
        params: ``params:training`` (see conf/base/parameters_training.yml).
        checkpoint_dir: where sessions live (``<checkpoint_dir>/<session_id>/``).
        shutdown: a stop flag; by default SIGINT/SIGTERM/SIGBREAK set one. It is read after
            every micro-batch; on a stop, an emergency checkpoint is saved (inside an
            accumulation: the state at the step's start, which a resumed run repeats) and
            ``TrainingInterrupted`` raised.
        on_step: called with a :class:`StepReport` after each optimiser step; a hook for
            tests and hyperparameter search (an exception it raises ends training).
        trackers: accelerate trackers that get each optimiser step's loss terms, learning
            rate, PET λ and throughput (e.g. :class:`so8t_kedro.tracking.steps.MlflowStepTracker`).
        clock: the clock of the checkpoint interval and the progress logger.
    """
    seed = int(params["seed"])
    set_seed(seed)
    accelerator = Accelerator(
        mixed_precision=params["mixed_precision"] if torch.cuda.is_available() else "no",
        # accelerate's default steps a prepared scheduler once per process per optimiser
        # step (N times too fast under `accelerate launch`); the loop steps it once itself.
        step_scheduler_with_optimizer=False,
        log_with=list(trackers) or None,  # [] would make accelerate warn of no trackers
    )
    accelerator.init_trackers("so8t")
    device = accelerator.device
    model, tokenizer = load_training_base(base_model_dir, params, device)
    pad_id = tokenizer.pad_token_id
    weights = params["loss_weights"]
    max_len = int(params["max_seq_length"])
    # The safety loss's probes are encoded once, with the samples (none without that loss).
    scorer = (FourClassScorer(tokenizer, fmt=str(samples["format"].iloc[0]),
                              max_probe_tokens=max_len)
              if weights["safety"] > 0 else None)
    min_target = int(params["min_target_tokens"])
    train = tokenise_samples(samples[samples["split"] == "train"], tokenizer, max_len, scorer,
                             min_target_tokens=min_target)
    readout = scorer.readout if scorer is not None else None
    val = tokenise_samples(samples[samples["split"] == "val"], tokenizer, max_len,
                           min_target_tokens=min_target)
    if not train:
        raise ValueError("training: the thinking_sft dataset has no split == 'train' rows")

    batch_size = int(params["batch_size"])
    accumulation = int(params["gradient_accumulation_steps"])
    epochs = int(params["epochs"])
    # Under `accelerate launch`, process `rank` takes its slice of each global batch.
    world, rank = accelerator.num_processes, accelerator.process_index
    global_batch = batch_size * world
    micro_per_epoch, steps_per_epoch = batches_per_epoch(len(train), batch_size, accumulation,
                                                         world)
    # ``max_steps`` (a trial's budget in hyperparameter search) cuts the run short; the
    # cosine schedule then spans the budget.
    total_steps = epochs * steps_per_epoch
    if params.get("max_steps"):
        total_steps = min(total_steps, int(params["max_steps"]))
    pet_schedule = PETSchedule(**params["pet_schedule"])
    # Each sample's tokens, for the length-grouped batches (the tail is the same for all).
    lengths = [len(e.input_ids) for e in train]
    group_batches = int(params["length_group_batches"])
    safety_temperature = float(params["safety_temperature"])
    distillation_temperature = float(params["distillation"]["temperature"])
    if weights["distill"] > 0:
        if readout is None:
            raise ValueError("training.loss_weights.distill > 0 reads the four labels' scores, "
                             "which only the four-class term computes: set "
                             "loss_weights.safety > 0 too")
        unscored = sum(e.reference_scores is None for e in train)
        if unscored:
            raise ValueError(
                f"training.loss_weights.distill > 0 needs the reference classifier's scores of "
                f"every train sample (the training pipeline's attach_reference_scores node "
                f"adds them); {unscored} of {len(train)} have none")
    max_skips = int(params["max_consecutive_skipped_steps"])
    if max_skips < 1:
        raise ValueError(f"training.max_consecutive_skipped_steps must be >= 1, got {max_skips}")

    untrained_val_loss = mean_lm_loss(model, val, pad_id, batch_size, device) if val else None
    model = add_adapters(model, params)
    trainable = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(trainable, lr=float(params["learning_rate"]),
                                  weight_decay=float(params["weight_decay"]))
    scheduler = get_cosine_schedule_with_warmup(
        optimizer, int(float(params["warmup_ratio"]) * total_steps), total_steps)
    model, optimizer, scheduler = accelerator.prepare(model, optimizer, scheduler)
    gates = list_gates(model)

    step, start_epoch, start_micro = 0, 0, 0
    fingerprint = run_fingerprint(params, base_model_dir, train, world)
    resume_from = resolve_resume(params["resume"], checkpoint_dir, fingerprint,
                                 accept_changes=bool(params["resume_accept_changes"]))
    if resume_from is not None:
        state = load(resume_from)
        load_trainable_state(accelerator.unwrap_model(model), state.trainable)
        optimizer.load_state_dict(state.optimizer)
        scheduler.load_state_dict(state.scheduler)
        if accelerator.scaler is not None and state.scaler is not None:
            accelerator.scaler.load_state_dict(state.scaler)
        restore_rng_state(state.rng)
        step, start_epoch, start_micro = state.step, state.epoch, state.position.index
        logger.info("Resuming from %s (step %d, epoch %d)", resume_from, step, start_epoch)

    # One session folder, written by the main process only (the others hold the same state).
    # A resumed unfinished session goes on in its own folder, so that a finished run leaves
    # one finished session ('latest' never resumes it); a finished one's checkpoint, named
    # explicitly, starts a new session.
    if resume_from is not None and not session_finished(resume_from.parent):
        session_dir = resume_from.parent
    else:
        session_dir = Path(checkpoint_dir) / broadcast_object_list([new_session_id()])[0]
    manager = CheckpointManager(
        session_dir,
        interval_seconds=float(params["checkpoint"]["interval_seconds"]),
        max_checkpoints=int(params["checkpoint"]["max_checkpoints"]),
        clock=clock, params=dict(params),
    ) if accelerator.is_main_process else None

    def snapshot(next_epoch: int, next_micro: int) -> TrainingState:
        return TrainingState(
            trainable=trainable_state(accelerator.unwrap_model(model)),
            optimizer=optimizer.state_dict(), scheduler=scheduler.state_dict(),
            scaler=accelerator.scaler.state_dict() if accelerator.scaler is not None else None,
            rng=capture_rng_state(), step=step, epoch=next_epoch,
            position=DataPosition(index=next_micro, seed=seed), params=dict(params),
            fingerprint=fingerprint,
        )

    def stop_requested() -> bool:
        """Whether any process was asked to stop; every process then has ``stop`` set, with
        the signal one of them received, so all leave at the same micro-batch."""
        local = torch.tensor([float(bool(stop)), float(stop.signum or 0)], device=device)
        requested, signum = accelerator.reduce(local, reduction="max").tolist()
        if requested and not stop:
            stop.request(int(signum) or None)
        return bool(requested)

    def interrupt(next_epoch: int, next_micro: int) -> TrainingInterrupted:
        """Save the emergency checkpoint (main process) and return the exception to raise;
        the other processes wait until it is on disk."""
        exc = manager.interrupt(snapshot(next_epoch, next_micro), stop) if manager else None
        accelerator.wait_for_everyone()
        return exc or TrainingInterrupted(session_dir, stop.signal_name, stop.signum)

    history: list[dict[str, float]] = []
    skipped = consecutive_skips = 0
    next_epoch, next_micro = start_epoch, start_micro
    profiler = PerformanceProfiler(clock=time.perf_counter)
    model.train()
    with ExitStack() as stack:
        stop = shutdown if shutdown is not None else stack.enter_context(graceful_shutdown())
        progress = stack.enter_context(ProgressLogger(
            session_dir, interval_seconds=float(params["progress"]["interval_seconds"]),
            thresholds=params["progress"]["thresholds"], total_steps=total_steps,
            clock=clock, initial_step=step,
            show_progress_bar=bool(params["progress"]["show_progress_bar"]),
        )) if manager else None
        if manager:
            stack.push(_mark_failed_on_error(manager))
        for epoch in range(start_epoch, epochs):
            order = batch_order(lengths, global_batch, seed, epoch, group_batches)
            micro = start_micro if epoch == start_epoch else 0
            while micro < micro_per_epoch and step < total_steps:
                group = range(micro, min(micro + accumulation, micro_per_epoch))
                set_seed(step_seed(seed, rank, epoch, group[0]))
                pet_lambda = pet_schedule.lambda_at(step, total_steps)
                micro_terms = []  # per micro-batch, on the device: read once per step
                tokens = samples_seen = 0
                profiler.step_started()
                for m in group:
                    start = m * global_batch + rank * batch_size
                    batch_examples = [train[i] for i in order[start : start + batch_size]]
                    last = m == group[-1]
                    # Gradients are all-reduced once, on the step's last micro-batch.
                    with nullcontext() if last else accelerator.no_sync(model):
                        terms = _losses(model, readout, gates, batch_examples, pad_id, device,
                                        weights, pet_lambda, safety_temperature,
                                        distillation_temperature)
                        accelerator.backward(terms["loss"] / len(group))
                    micro_terms.append(torch.stack([terms[k].detach().float()
                                                    for k in LOSS_TERMS]))
                    tokens += sum(len(e.input_ids) for e in batch_examples)
                    samples_seen += len(batch_examples)
                    # A stop inside the accumulation keeps the state at the step's start: no
                    # weights have changed, and a resumed run redoes these micro-batches
                    # with the same seed. The stop after the last one is read after the step.
                    if not last and stop_requested():
                        raise interrupt(epoch, group[0])
                # The mean over processes of each process's mean over its micro-batches, and
                # the tokens and samples of the global batch.
                mean_terms = accelerator.reduce(torch.stack(micro_terms).mean(0), "mean")
                tokens, samples_seen = accelerator.reduce(
                    torch.tensor([tokens, samples_seen], device=device), "sum").tolist()
                grad_norm = accelerator.clip_grad_norm_(trainable, float(params["max_grad_norm"]))
                micro = group[-1] + 1
                at_epoch_end = micro >= micro_per_epoch
                next_epoch, next_micro = (epoch + 1, 0) if at_epoch_end else (epoch, micro)
                # Under fp16 the GradScaler owns non-finite gradients: it skips the step and
                # lowers its scale. Otherwise (and for a non-finite loss) the loop skips.
                finite = bool(torch.isfinite(mean_terms).all()) and (
                    accelerator.scaler is not None or bool(torch.isfinite(grad_norm)))
                if finite:
                    consecutive_skips = 0
                    optimizer.step()
                    if not accelerator.optimizer_step_was_skipped:
                        scheduler.step()
                    optimizer.zero_grad(set_to_none=True)
                    step += 1
                    seconds = profiler.step_finished(tokens=tokens, samples=samples_seen)
                    losses = dict(zip(LOSS_TERMS, mean_terms.double().tolist(), strict=True))
                    record = {"step": step, "epoch": epoch, "lr": scheduler.get_last_lr()[0],
                              "pet_lambda": pet_lambda, "tokens": tokens, **losses}
                    history.append(record)
                    if progress:
                        progress.update(step, epoch, dict(losses), record["lr"], samples_seen,
                                        tokens)
                    accelerator.log({**losses, "lr": record["lr"], "pet_lambda": pet_lambda,
                                     "tokens_per_second": tokens / seconds,
                                     "samples_per_second": samples_seen / seconds}, step=step)
                    if on_step is not None:
                        on_step(StepReport(step, epoch, dict(losses),
                                           accelerator.unwrap_model(model), tokenizer))
                else:
                    optimizer.zero_grad(set_to_none=True)
                    skipped += 1
                    consecutive_skips += 1
                    logger.warning("training: skipped the step after optimiser step %d (epoch "
                                   "%d, micro-batches %d-%d): non-finite loss or gradient; "
                                   "%d skipped so far", step, epoch, group[0], group[-1],
                                   skipped)
                    if consecutive_skips >= max_skips:
                        path = (manager.save("emergency", snapshot(next_epoch, next_micro))
                                if manager else session_dir)
                        accelerator.wait_for_everyone()
                        raise NonFiniteLossError(
                            f"training: {consecutive_skips} optimiser steps in a row had a "
                            f"non-finite loss or gradient (training.max_consecutive_skipped_"
                            f"steps: {max_skips}); the last finite state (step {step}) is "
                            f"saved in {path}. Lower training.learning_rate or check the "
                            f"samples of epoch {epoch}, micro-batches {group[0]}-{group[-1]}")
                if stop_requested():
                    raise interrupt(next_epoch, next_micro)
                if manager and at_epoch_end:
                    manager.save("epoch", snapshot(next_epoch, next_micro), epoch=epoch + 1)
                elif manager and manager.should_save():
                    manager.save("rolling", snapshot(next_epoch, next_micro))
        if manager:
            manager.save("final", snapshot(next_epoch, next_micro))
    # Trackers write what they still hold (accelerator.end_training() would also end the
    # process group).
    for tracker in accelerator.trackers:
        tracker.finish()

    trained_val_loss = mean_lm_loss(model, val, pad_id, batch_size, device) if val else None
    if manager:
        profiler.write(session_dir / "performance_report.json")
    unwrapped = accelerator.unwrap_model(model)
    unwrapped.eval()
    summary = {
        "session_dir": str(session_dir),
        "resumed_from": str(resume_from) if resume_from else None,
        "base_model_dir": str(base_model_dir),
        "train_samples": len(train),
        "val_samples": len(val),
        "optimizer_steps": step,
        "skipped_steps": skipped,
        "epochs": epochs,
        "val_lm_loss_untrained": untrained_val_loss,
        "val_lm_loss_trained": trained_val_loss,
        "trainable_parameters": sum(p.numel() for p in trainable),
        "gates": len(gates),
        "performance": profiler.report(),
    }
    logger.info("Validation LM loss: untrained %s -> trained %s",
                _fmt(untrained_val_loss), _fmt(trained_val_loss))
    return TrainResult(unwrapped, tokenizer, pd.DataFrame(history, columns=list(HISTORY_COLUMNS)),
                       summary, session_dir)


def _mark_failed_on_error(manager: CheckpointManager):
    """An exit callback: an error (not a signal stop, which marks itself ``interrupted``)
    leaves the session marked ``failed`` with the error, and propagates."""

    def on_exit(exc_type, exc, traceback) -> bool:
        if exc is not None and not isinstance(exc, TrainingInterrupted):
            manager.set_status("failed", error=f"{exc_type.__name__}: {exc}")
        return False

    return on_exit


def _fmt(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.4f}"


def _losses(model, readout: DecisionReadout | None, gates, examples: Sequence[Example],
            pad_id: int, device, weights: Mapping[str, float], pet_lambda: float,
            safety_temperature: float,
            distillation_temperature: float) -> dict[str, torch.Tensor]:
    """The loss terms of one micro-batch and their weighted sum.

    One forward pass: with a ``readout`` (the four-class term) each row holds the sample,
    then the decision tail that sees only the sample's prompt (:func:`collate`), so the
    label scores come from the same pass as the LM loss; without one the safety term is 0.
    """
    batch = {k: v.to(device) for k, v in collate(examples, pad_id, readout).items()}
    mask = (additive_mask(batch["attend"], float_dtype(model)) if readout is not None
            else batch["attention_mask"])
    # Logits only from the position before the first target token to the end (completions
    # and the decision tail): the prompts' positions predict nothing a loss reads, and the
    # output layer over the vocabulary is the model's largest matmul for a small base.
    labels = batch["labels"]
    targets = (labels != IGNORE_INDEX).any(dim=0).nonzero()
    keep = labels.shape[1] - int(targets[0]) + 1 if len(targets) else 1
    if readout is not None:
        keep = max(keep, len(readout.tokens))
    out = model(input_ids=batch["input_ids"], position_ids=batch["position_ids"],
                attention_mask=mask, output_hidden_states=pet_lambda > 0, logits_to_keep=keep)
    lm = lm_loss(out.logits, labels[:, -keep:])
    zero = lm.new_zeros(())
    # PET runs over the samples' own tokens: padding and the tail are masked out.
    pet = pet_loss(out.hidden_states[-1], batch["attention_mask"]) if pet_lambda > 0 else zero
    if readout is not None:
        scores = readout.scores(out.logits[:, -len(readout.tokens):])
        target = torch.tensor([e.label_id for e in examples], device=device)
        safety = F.cross_entropy(scores / safety_temperature, target)
    else:
        safety = zero
    if weights["distill"] > 0:
        # Hinton et al.'s distillation: both distributions softened by T, the gradient's
        # scale kept by T².
        t = distillation_temperature
        teacher = torch.softmax(torch.tensor([e.reference_scores for e in examples],
                                             device=device, dtype=torch.float32) / t, dim=-1)
        distill = F.kl_div(F.log_softmax(scores.float() / t, dim=-1), teacher,
                           reduction="batchmean") * t * t
    else:
        distill = zero
    ortho = orthogonality_loss(gates) if gates else zero
    loss = (weights["cmd"] * lm + weights["safety"] * safety + weights["distill"] * distill
            + pet_lambda * pet + weights["orthogonal_reg"] * ortho)
    return {"loss": loss, "lm": lm, "safety": safety, "distill": distill, "pet": pet,
            "orthogonality": ortho}
