"""The SO8T training loop on a tiny embedded model (CPU)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from so8t_kedro.classifier import FourClassScorer, split_token_ids
from so8t_kedro.labels import LABELS
from so8t_kedro.so8t import GATES_FILE
from so8t_kedro.think_format import label_continuations, render_decision_probe
from so8t_kedro.training.base_model import load_base_model
from so8t_kedro.training.checkpoint import ShutdownFlag, TrainingInterrupted, load
from so8t_kedro.training.loop import (
    IGNORE_INDEX,
    LOSS_TERMS,
    collate,
    lm_loss,
    tokenise_samples,
    train_so8t,
)


def test_prompt_tokens_are_masked_out_of_the_lm_loss(tiny_base_dir, sft_samples):
    _, tokenizer = load_base_model(tiny_base_dir)
    row = sft_samples.iloc[0]
    [example] = tokenise_samples(sft_samples.iloc[:1], tokenizer, max_seq_length=4096)
    prompt_ids, completion_ids = split_token_ids(tokenizer, row["prompt"], row["completion"])
    assert example.input_ids == prompt_ids + completion_ids
    assert example.labels[: len(prompt_ids)] == [IGNORE_INDEX] * len(prompt_ids)
    assert example.labels[len(prompt_ids):] == completion_ids

    batch = collate([example], tokenizer.pad_token_id)
    logits = torch.randn(1, len(example.input_ids), len(tokenizer))
    changed = logits.clone()
    changed[0, : len(prompt_ids) - 1] += 100 * torch.randn(len(prompt_ids) - 1, len(tokenizer))
    # logits before the last prompt token predict prompt tokens: they must not count
    assert lm_loss(changed, batch["labels"]) == pytest.approx(float(lm_loss(logits, batch["labels"])))
    changed[0, -2] += 100 * torch.randn(len(tokenizer))  # predicts a completion token
    assert lm_loss(changed, batch["labels"]) != pytest.approx(float(lm_loss(logits, batch["labels"])))


def test_batched_scores_equal_one_sequence_at_a_time(tiny_base_dir, sft_samples):
    model, tokenizer = load_base_model(tiny_base_dir)
    scorer = FourClassScorer(tokenizer)
    texts = ["短い質問", "A much longer English request that makes the probe several tokens longer"]
    scores = scorer.label_log_likelihoods(model, scorer.batch(texts, ["ja", "en"]))
    for i, (text, language) in enumerate(zip(texts, ["ja", "en"])):
        for j, label in enumerate(LABELS):
            head, tail = split_token_ids(tokenizer, render_decision_probe(text, "quadruple", language),
                                         label_continuations()[label])
            log_probs = torch.log_softmax(model(input_ids=torch.tensor([head + tail])).logits[0], -1)
            expected = sum(log_probs[len(head) - 1 + k, t].item() for k, t in enumerate(tail))
            assert scores[i, j].item() == pytest.approx(expected, abs=1e-4)


@pytest.mark.parametrize("quantization", [None, "8bit", "4bit"])
def test_training_runs_and_saves_lora_and_gates(tiny_base_dir, sft_samples, training_params,
                                                 tmp_path, quantization):
    training_params.update(quantization=quantization, epochs=1)
    result = train_so8t(tiny_base_dir, sft_samples, training_params,
                        checkpoint_dir=training_params["checkpoint"]["dir"])
    assert len(result.history) == 6  # 24 train samples / batch 4, one epoch
    assert set(LOSS_TERMS) <= set(result.history.columns)
    assert result.history[list(LOSS_TERMS)].map(math.isfinite).all().all()
    assert (result.history["safety"] > 0).all() and (result.history["pet"] > 0).all()
    assert result.summary["gates"] == 2 and result.summary["optimizer_steps"] == 6

    epoch_1 = load(result.session_dir / "checkpoint_epoch_1")
    thetas = {k: v for k, v in epoch_1.trainable.items() if "so8t_gate" in k}
    assert len(thetas) == 2 and any("lora_A" in k for k in epoch_1.trainable)

    from so8t_kedro.so8t import save_adapter

    save_adapter(result.model, tmp_path / "adapter")
    saved = load_file(tmp_path / "adapter" / GATES_FILE)
    assert len(saved) == 2
    assert all(v.abs().sum() > 0 for v in saved.values())


def test_gradient_accumulation_without_the_safety_loss(tiny_base_dir, sft_samples,
                                                      training_params):
    """6 micro-batches in groups of 4: a full step and a last one of 2, every train sample
    seen once; with safety weight 0 no probe is encoded or scored."""
    training_params.update(epochs=1, gradient_accumulation_steps=4)
    training_params["loss_weights"]["safety"] = 0.0
    result = train_so8t(tiny_base_dir, sft_samples, training_params,
                        checkpoint_dir=training_params["checkpoint"]["dir"])
    _, tokenizer = load_base_model(tiny_base_dir)
    train = tokenise_samples(sft_samples[sft_samples["split"] == "train"], tokenizer,
                             training_params["max_seq_length"])
    assert result.history["step"].tolist() == [1, 2]
    assert result.history["tokens"].sum() == sum(len(e.input_ids) for e in train)
    assert (result.history["safety"] == 0).all() and (result.history["lm"] > 0).all()


def test_validation_lm_loss_falls_with_training(tiny_base_dir, sft_samples, training_params):
    training_params.update(epochs=3)
    result = train_so8t(tiny_base_dir, sft_samples, training_params,
                        checkpoint_dir=training_params["checkpoint"]["dir"])
    summary = result.summary
    assert summary["val_lm_loss_trained"] < summary["val_lm_loss_untrained"] - 0.3, summary


def test_resumed_run_repeats_the_uninterrupted_losses(tiny_base_dir, sft_samples,
                                                      training_params):
    checkpoint_dir = training_params["checkpoint"]["dir"]
    uninterrupted = train_so8t(tiny_base_dir, sft_samples, training_params,
                               checkpoint_dir=checkpoint_dir).history

    flag = ShutdownFlag()

    def stop_after_step_4(report):
        if report.step == 4:
            flag.requested, flag.signal_name = True, "SIGTERM"

    with pytest.raises(TrainingInterrupted) as interrupted:
        train_so8t(tiny_base_dir, sft_samples, training_params, checkpoint_dir=checkpoint_dir,
                   shutdown=flag, on_step=stop_after_step_4)
    assert interrupted.value.checkpoint_path.name.startswith("checkpoint_emergency_")

    torch.manual_seed(999)  # scramble the RNGs: resume must restore them
    resumed = train_so8t(tiny_base_dir, sft_samples,
                         {**training_params, "resume": str(interrupted.value.checkpoint_path)},
                         checkpoint_dir=checkpoint_dir).history
    assert resumed["step"].tolist() == list(range(5, 13))
    expected = uninterrupted[uninterrupted["step"] >= 5]
    for term in LOSS_TERMS:
        assert resumed[term].tolist() == pytest.approx(expected[term].tolist(), abs=1e-6), term


@pytest.mark.slow
def test_sigterm_saves_an_emergency_checkpoint_and_exits_cleanly(
    tiny_base_dir, sft_samples, training_params, tmp_path
):
    import json
    import os
    import signal
    import subprocess
    import sys
    import time
    from pathlib import Path

    training_params["epochs"] = 20  # far longer than the test waits
    samples_path, params_path = tmp_path / "samples.jsonl", tmp_path / "params.json"
    sft_samples.to_json(samples_path, orient="records", lines=True, force_ascii=False)
    params_path.write_text(json.dumps(training_params))
    ready = tmp_path / "ready"
    worker = Path(__file__).with_name("_train_worker.py")
    process = subprocess.Popen(
        [sys.executable, str(worker), str(tiny_base_dir), str(samples_path), str(params_path),
         str(ready)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    deadline = time.monotonic() + 120
    while not ready.exists() and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    assert ready.exists(), process.communicate()[1][-2000:]
    os.kill(process.pid, signal.SIGTERM)
    stdout, stderr = process.communicate(timeout=120)

    assert process.returncode == 128 + signal.SIGTERM, stderr[-2000:]
    assert "Traceback" not in stderr
    assert "training.resume=latest" in stdout
    [session] = Path(training_params["checkpoint"]["dir"]).iterdir()
    [emergency] = session.glob("checkpoint_emergency_*")
    state = load(emergency)
    assert state.step >= 1 and any("so8t_gate" in name for name in state.trainable)
    assert json.loads((session / "session_info.json").read_text())["status"] == "interrupted"


def test_an_error_marks_the_session_failed(tiny_base_dir, sft_samples, training_params):
    def fail_at_step_2(report):
        if report.step == 2:
            raise RuntimeError("objective diverged")

    with pytest.raises(RuntimeError, match="objective diverged"):
        train_so8t(tiny_base_dir, sft_samples, training_params,
                   checkpoint_dir=training_params["checkpoint"]["dir"], on_step=fail_at_step_2)
    (info_path,) = Path(training_params["checkpoint"]["dir"]).glob("*/session_info.json")
    info = json.loads(info_path.read_text())
    assert info["status"] == "failed"
    assert info["error"] == "RuntimeError: objective diverged"
