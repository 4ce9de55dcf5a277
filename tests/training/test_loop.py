"""The SO8T training loop on a tiny embedded model (CPU)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from safetensors.torch import load_file

from so8t_kedro.decision.classifier import (
    FourClassScorer,
    continuation_ids,
    scored_token_counts,
    split_token_ids,
)
from so8t_kedro.labels import LABELS
from so8t_kedro.models.loading import load_base_model
from so8t_kedro.so8t import GATES_FILE
from so8t_kedro.think import (
    label_continuations,
    render_decision_probe,
    render_prompt,
    request_from_prompt,
)
from so8t_kedro.training.checkpoint import (
    CheckpointNotFoundError,
    ResumeMismatchError,
    ShutdownFlag,
    TrainingInterrupted,
    load,
)
from so8t_kedro.training.loop import (
    IGNORE_INDEX,
    LOSS_TERMS,
    NonFiniteLossError,
    _losses,
    add_adapters,
    batch_order,
    collate,
    lm_loss,
    tokenise_samples,
    train_so8t,
)


def test_prompt_tokens_are_masked_out_of_the_lm_loss(tiny_base_dir, sft_samples):
    _, tokenizer = load_base_model(tiny_base_dir)
    row = sft_samples.iloc[0]
    [example] = tokenise_samples(sft_samples.iloc[:1], tokenizer, max_seq_length=4096,
                                    min_target_tokens=64)
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


# Issue 15's acceptance bound for the shared pass ("loss values unchanged to 1e-5"). The
# shared and separate passes regroup the same float32 sums (other shapes, masks, padding);
# the worst-case bound for that (tests/helpers/tolerances.forward_bound) is about 1e-3 on
# this model, so a failure here says the shared pass computes something else, or a CPU
# rounds far off the typical ~1e-6 measured.
SHARED_PASS_TOLERANCE = 1e-5


def _separate_scores(model, tokenizer, scorer, texts, languages):
    """The unshared reference: each label's probe + whole continuation as its own sequence,
    its scored tokens' log-probabilities summed."""
    counts = scored_token_counts(scorer.readout.continuations)
    scores = torch.zeros(len(texts), len(LABELS))
    for i, (text, language) in enumerate(zip(texts, languages)):
        for j, label in enumerate(LABELS):
            head, tail = split_token_ids(tokenizer, render_decision_probe(text, "quadruple", language),
                                         label_continuations()[label])
            log_probs = torch.log_softmax(model(input_ids=torch.tensor([head + tail])).logits[0], -1)
            scores[i, j] = sum(log_probs[len(head) - 1 + k, t] for k, t in enumerate(tail[: counts[j]]))
    return scores


def test_batched_scores_equal_one_sequence_at_a_time(tiny_base_dir):
    model, tokenizer = load_base_model(tiny_base_dir)
    scorer = FourClassScorer(tokenizer)
    texts = ["短い質問", "A much longer English request that makes the probe several tokens longer"]
    with torch.no_grad():
        scores = scorer.label_log_likelihoods(model, scorer.batch(texts, ["ja", "en"]))
        expected = _separate_scores(model, tokenizer, scorer, texts, ["ja", "en"])
    torch.testing.assert_close(scores, expected, atol=SHARED_PASS_TOLERANCE, rtol=0)


# Four samples of the four labels and of different lengths.
FOUR_LABEL_ROWS = [0, 9, 17, 26]


def _one_pass_and_separate_scores(model, tokenizer, rows, weights, safety_temperature):
    """The examples of ``rows``, the loss terms of their one-pass micro-batch, and their
    probes' label scores with each probe scored alone."""
    scorer = FourClassScorer(tokenizer)
    examples = tokenise_samples(rows, tokenizer, 512, scorer, min_target_tokens=64)
    with torch.no_grad():
        terms = _losses(model, scorer.readout, {}, examples, tokenizer.pad_token_id, "cpu",
                        weights, pet_lambda=0.0, safety_temperature=safety_temperature,
                        distillation_temperature=2.0)
        texts = [request_from_prompt(p) for p in rows["prompt"]]
        scores = _separate_scores(model, tokenizer, scorer, texts, rows["language"].tolist())
    return examples, terms, scores


def test_one_pass_losses_equal_separate_passes(tiny_base_dir, sft_samples):
    """The full objective's single pass (sample + decision tail in one row, left-padded with
    others of other lengths) gives the LM loss of a plain pass over the samples and the
    four-class loss of the probes scored one sequence at a time, to 1e-5."""
    model, tokenizer = load_base_model(tiny_base_dir)
    rows = sft_samples.iloc[FOUR_LABEL_ROWS]
    weights = {"cmd": 0.7, "safety": 1.3, "distill": 0.0, "orthogonal_reg": 0.0}
    examples, terms, scores = _one_pass_and_separate_scores(model, tokenizer, rows, weights,
                                                            safety_temperature=0.5)
    with torch.no_grad():
        plain = tokenise_samples(rows, tokenizer, 512, min_target_tokens=64)
        lm_sum = count = 0
        for e in plain:  # each sample alone: no padding, no tail
            logits = model(input_ids=torch.tensor([e.input_ids])).logits
            n = sum(t != IGNORE_INDEX for t in e.labels[1:])
            lm_sum += float(lm_loss(logits, torch.tensor([e.labels]))) * n
            count += n
        safety = torch.nn.functional.cross_entropy(scores / 0.5, torch.tensor(rows["label_id"].tolist()))
    assert plain[0].input_ids == examples[0].input_ids  # the tail's room cut nothing here
    assert float(terms["lm"]) == pytest.approx(lm_sum / count, abs=SHARED_PASS_TOLERANCE)
    assert float(terms["safety"]) == pytest.approx(float(safety), abs=SHARED_PASS_TOLERANCE)
    assert float(terms["loss"]) == pytest.approx(0.7 * lm_sum / count + 1.3 * float(safety),
                                                 abs=2 * SHARED_PASS_TOLERANCE)


def test_the_distillation_term_is_the_tempered_kl_from_the_reference(tiny_base_dir,
                                                                     sft_samples):
    """distill = T² · KL(softmax(reference / T) ‖ softmax(model's label scores / T)), batch
    mean, from the same one-pass scores as the four-class term; it joins the total with its
    weight."""
    model, tokenizer = load_base_model(tiny_base_dir)
    rows = sft_samples.iloc[FOUR_LABEL_ROWS].copy()
    reference = torch.tensor([[2.0, -1.0, 0.5, 0.0], [0.0, 3.0, -2.0, 1.0],
                              [1.0, 1.0, 1.0, 1.0], [-1.0, 0.0, 0.0, 4.0]])
    rows["reference_scores"] = reference.tolist()
    weights = {"cmd": 0.0, "safety": 0.0, "distill": 1.5, "orthogonal_reg": 0.0}
    _, terms, scores = _one_pass_and_separate_scores(model, tokenizer, rows, weights,
                                                     safety_temperature=1.0)
    teacher = torch.softmax(reference / 2.0, dim=-1)
    student = torch.log_softmax(scores / 2.0, dim=-1)
    expected = 4.0 * float((teacher * (teacher.log() - student)).sum(-1).mean())
    assert expected > 0.05  # the untrained model is far from these targets
    assert float(terms["distill"]) == pytest.approx(expected, abs=SHARED_PASS_TOLERANCE)
    assert float(terms["loss"]) == pytest.approx(1.5 * expected, abs=2 * SHARED_PASS_TOLERANCE)


def test_reference_scores_survive_a_json_round_trip_of_the_samples(tiny_base_dir, sft_samples,
                                                                  tmp_path):
    """Train rows keep their four scores and the other rows none, also after the table went
    through JSON (where a missing entry comes back as NaN), as a benchmark's worker reads it."""
    _, tokenizer = load_base_model(tiny_base_dir)
    samples = sft_samples.copy()
    train = samples["split"] == "train"
    samples["reference_scores"] = [[float(i), 0.0, -1.0, 2.5] if t else None
                                   for i, t in enumerate(train)]
    path = tmp_path / "samples.jsonl"
    samples.to_json(path, orient="records", lines=True, force_ascii=False)
    for table in (samples, pd.read_json(path, lines=True, dtype=False)):
        examples = tokenise_samples(table, tokenizer, 512, min_target_tokens=64)
        assert [e.reference_scores for e, t in zip(examples, train, strict=True) if not t] \
            == [None] * int((~train).sum())
        assert [e.reference_scores for e, t in zip(examples, train, strict=True) if t] \
            == [(float(i), 0.0, -1.0, 2.5) for i, t in enumerate(train) if t]


def test_distillation_without_reference_scores_is_refused(tiny_base_dir, sft_samples,
                                                          training_params):
    training_params["loss_weights"]["distill"] = 0.5
    with pytest.raises(ValueError, match=r"distill > 0 needs the reference classifier's "
                                         r"scores of every train sample.*24 of 24 have none"):
        train_so8t(tiny_base_dir, sft_samples, training_params,
                   checkpoint_dir=training_params["checkpoint"]["dir"])


def test_uniform_attention_start_zeroes_the_trained_queries_only(tiny_base_dir,
                                                                 training_params):
    """The fully trained copy of each qkv_proj starts with zero query rows (every head then
    weighs its prefix alike) and the base's keys and values; the frozen base is untouched.
    Without a fully trained qkv_proj the setting is refused, naming the fix."""
    training_params["uniform_attention_start"] = True
    with pytest.raises(ValueError, match="add qkv_proj to lora.modules_to_save"):
        add_adapters(load_base_model(tiny_base_dir)[0], training_params)

    base, _ = load_base_model(tiny_base_dir)
    original = [layer.self_attn.qkv_proj.weight.detach().clone() for layer in base.model.layers]
    training_params["lora"].update(target_modules=["o_proj", "gate_up_proj", "down_proj"],
                                   modules_to_save=["qkv_proj"])
    model = add_adapters(base, training_params)
    hidden = base.config.hidden_size
    for layer, weight in zip(model.base_model.model.model.layers, original, strict=True):
        wrapper = layer.self_attn.qkv_proj
        trained = wrapper.modules_to_save["default"].weight
        assert trained.requires_grad
        assert not trained[:hidden].any()
        assert torch.equal(trained[hidden:], weight[hidden:])
        assert torch.equal(wrapper.original_module.weight, weight)


def test_each_samples_loss_is_the_same_alone_and_in_a_padded_batch(tiny_base_dir, sft_samples):
    """Length grouping changes which samples share a batch; each sample's own LM loss must
    not depend on it (left padding with position ids that count real tokens only)."""
    model, tokenizer = load_base_model(tiny_base_dir)
    examples = tokenise_samples(sft_samples.iloc[:6], tokenizer, 512, min_target_tokens=64)
    assert len({len(e.input_ids) for e in examples}) > 1  # padding does happen
    with torch.no_grad():
        batch = collate(examples, tokenizer.pad_token_id)
        logits = model(input_ids=batch["input_ids"], position_ids=batch["position_ids"],
                       attention_mask=batch["attention_mask"]).logits
        for i, e in enumerate(examples):
            alone = model(input_ids=torch.tensor([e.input_ids])).logits
            in_batch = float(lm_loss(logits[i : i + 1], batch["labels"][i : i + 1]))
            expected = float(lm_loss(alone, torch.tensor([e.labels])))
            assert in_batch == pytest.approx(expected, abs=SHARED_PASS_TOLERANCE)


def test_length_grouped_order_is_a_permutation_with_little_padding():
    rng = np.random.default_rng(0)
    lengths = rng.integers(50, 400, size=203).tolist()
    grouped = batch_order(lengths, 8, seed=1, epoch=2, group_batches=10)
    plain = batch_order(lengths, 8, seed=1, epoch=2, group_batches=1)
    assert sorted(grouped.tolist()) == list(range(203)) == sorted(plain.tolist())
    assert grouped.tolist() == batch_order(lengths, 8, seed=1, epoch=2, group_batches=10).tolist()
    assert grouped.tolist() != batch_order(lengths, 8, seed=1, epoch=3, group_batches=10).tolist()

    def padded(order):
        batches = [np.asarray(lengths)[order[i : i + 8]] for i in range(0, len(order), 8)]
        return sum(len(b) * b.max() for b in batches) / sum(lengths)

    # Random batches of 8 from lengths uniform on [50, 400) pad to ~1.5x the real tokens;
    # sorted windows of 80 leave a few per cent.
    assert padded(plain) > 1.3 and padded(grouped) < 1.1
    # Each batch is a slice of a window sorted longest first.
    for start in range(0, 203, 8):
        batch = np.asarray(lengths)[grouped[start : start + 8]]
        assert (np.diff(batch) <= 0).all()


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
                             training_params["max_seq_length"],
                             min_target_tokens=training_params["min_target_tokens"])
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
    # The same operations on the same restored state: bit-identical, on any CPU.
    for term in LOSS_TERMS:
        assert resumed[term].tolist() == expected[term].tolist(), term


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


# ----------------------------------------------------------------- no step on no data


def test_a_long_prompt_loses_tokens_from_the_left_and_keeps_its_targets(tiny_base_dir,
                                                                        sft_samples):
    _, tokenizer = load_base_model(tiny_base_dir)
    scorer = FourClassScorer(tokenizer)
    rows = sft_samples.iloc[[0, 1]].copy()
    rows["prompt"] = [render_prompt("長い依頼の文です。" * 60 + "最後の一文", "ja"),
                      rows["prompt"].iloc[1]]
    full_prompt = scorer.prompt_ids(rows["prompt"].iloc[0])
    completion = continuation_ids(tokenizer, full_prompt, rows["prompt"].iloc[0],
                                  rows["completion"].iloc[0])
    assert len(full_prompt) > 200
    long = tokenise_samples(rows.iloc[:1], tokenizer, 96, scorer, min_target_tokens=16)[0]
    tail = len(scorer.readout.tokens)
    assert len(long.input_ids) == 96 - tail
    # The prompt's end (request's end, assistant tag) stays; 16 target tokens follow it.
    assert long.input_ids[: long.prompt_length] == full_prompt[-long.prompt_length:]
    assert long.prompt_length == 96 - tail - 16
    assert long.labels[long.prompt_length:] == completion[:16]
    assert sum(label != IGNORE_INDEX for label in long.labels) == 16
    # A prompt that leaves more than min_target_tokens stays whole; the completion has the rest.
    short_prompt = scorer.prompt_ids(rows["prompt"].iloc[1])
    window = len(short_prompt) + tail + 20
    short = tokenise_samples(rows.iloc[1:], tokenizer, window, scorer, min_target_tokens=16)[0]
    assert short.input_ids[: short.prompt_length] == short_prompt
    assert sum(label != IGNORE_INDEX for label in short.labels) == 20
    with pytest.raises(ValueError, match="training.min_target_tokens .* got 96"):
        tokenise_samples(rows, tokenizer, 96, scorer, min_target_tokens=96)


def test_training_with_a_max_seq_length_shorter_than_the_prompts(tiny_base_dir, sft_samples,
                                                                 training_params):
    """The issue's run (max_seq_length 40) logged a NaN loss at every step: every prompt
    filled the window. Cut from the left, every sample keeps its targets."""
    training_params.update(epochs=1, max_seq_length=40, min_target_tokens=8)
    result = train_so8t(tiny_base_dir, sft_samples, training_params,
                        checkpoint_dir=training_params["checkpoint"]["dir"])
    assert len(result.history) == 6 and result.summary["skipped_steps"] == 0
    assert result.history[list(LOSS_TERMS)].map(math.isfinite).all().all()
    assert (result.history["lm"] > 0).all()


def test_a_batch_without_targets_adds_no_lm_loss():
    logits = torch.randn(2, 5, 11, requires_grad=True)
    loss = lm_loss(logits, torch.full((2, 5), IGNORE_INDEX))
    loss.backward()
    assert float(loss.detach()) == 0 and float(logits.grad.abs().sum()) == 0


@pytest.fixture
def poisoned_losses(monkeypatch):
    """``poison(calls)``: the micro-batches numbered ``calls`` (0-based, in the order they
    run) get a NaN loss, as a bad batch or an overflow would give."""
    from so8t_kedro.training import loop

    def poison(calls):
        original, count = loop._losses, iter(range(10**6))

        def losses(*args, **kwargs):
            terms = original(*args, **kwargs)
            if next(count) in calls:
                terms["loss"] = terms["loss"] * float("nan")
            return terms

        monkeypatch.setattr(loop, "_losses", losses)

    return poison


def test_a_non_finite_step_is_skipped_and_counted(tiny_base_dir, sft_samples, training_params,
                                                 poisoned_losses, caplog):
    training_params.update(epochs=1)
    clean = train_so8t(tiny_base_dir, sft_samples, training_params,
                       checkpoint_dir=training_params["checkpoint"]["dir"]).history
    poisoned_losses({2})
    with caplog.at_level("WARNING", logger="so8t_kedro.training.loop"):
        result = train_so8t(tiny_base_dir, sft_samples, training_params,
                            checkpoint_dir=training_params["checkpoint"]["dir"])
    assert result.summary["skipped_steps"] == 1
    assert any("non-finite loss or gradient; 1 skipped" in r.getMessage() for r in caplog.records)
    history = result.history
    assert history["step"].tolist() == [1, 2, 3, 4, 5]
    assert history[list(LOSS_TERMS)].map(math.isfinite).all().all()
    # Steps 1-2 are the clean run's; the skipped batch changed no weight and no learning rate.
    for term in LOSS_TERMS:
        assert history[term][:2].tolist() == clean[term][:2].tolist()
    assert history["lr"].tolist() == pytest.approx(clean["lr"][:5].tolist())


def test_consecutive_non_finite_steps_stop_with_an_emergency_checkpoint(
        tiny_base_dir, sft_samples, training_params, poisoned_losses):
    training_params.update(epochs=1, max_consecutive_skipped_steps=2)
    poisoned_losses(set(range(2, 100)))
    with pytest.raises(NonFiniteLossError, match=r"2 optimiser steps in a row .* \(step 2\)"):
        train_so8t(tiny_base_dir, sft_samples, training_params,
                   checkpoint_dir=training_params["checkpoint"]["dir"])
    [session] = Path(training_params["checkpoint"]["dir"]).iterdir()
    [emergency] = session.glob("checkpoint_emergency_*")
    state = load(emergency)
    assert (state.step, state.epoch, state.position.index) == (2, 0, 4)
    assert all(torch.isfinite(t).all() for t in state.trainable.values())
    info = json.loads((session / "session_info.json").read_text())
    assert info["status"] == "failed" and "NonFiniteLossError" in info["error"]


# ----------------------------------------------------------------- stops and resume


def test_a_stop_inside_an_accumulation_resumes_to_the_uninterrupted_losses(
        tiny_base_dir, sft_samples, training_params, monkeypatch):
    """Accumulation 2: the stop lands after micro-batch 2 (the first of step 2's two), not
    at a step boundary; the checkpoint holds the state before step 2."""
    from so8t_kedro.training import loop

    training_params.update(epochs=1, gradient_accumulation_steps=2)
    checkpoint_dir = training_params["checkpoint"]["dir"]
    uninterrupted = train_so8t(tiny_base_dir, sft_samples, training_params,
                               checkpoint_dir=checkpoint_dir).history
    assert uninterrupted["step"].tolist() == [1, 2, 3]

    flag, original, calls = ShutdownFlag(), loop._losses, []

    def losses(*args, **kwargs):
        calls.append(None)
        if len(calls) == 3:  # micro-batch 2
            flag.request(None)
        return original(*args, **kwargs)

    monkeypatch.setattr(loop, "_losses", losses)
    with pytest.raises(TrainingInterrupted) as interrupted:
        train_so8t(tiny_base_dir, sft_samples, training_params, checkpoint_dir=checkpoint_dir,
                   shutdown=flag)
    assert len(calls) == 3  # stopped right after that micro-batch
    state = load(interrupted.value.checkpoint_path)
    assert (state.step, state.epoch, state.position.index) == (1, 0, 2)
    monkeypatch.setattr(loop, "_losses", original)

    torch.manual_seed(999)  # scramble the RNGs: resume must not depend on them
    resumed = train_so8t(tiny_base_dir, sft_samples, {**training_params, "resume": "latest"},
                         checkpoint_dir=checkpoint_dir)
    assert resumed.summary["resumed_from"] == str(interrupted.value.checkpoint_path)
    assert resumed.history["step"].tolist() == [2, 3]
    expected = uninterrupted[uninterrupted["step"] >= 2]
    for term in (*LOSS_TERMS, "lr"):
        assert resumed.history[term].tolist() == expected[term].tolist(), term
    # The resumed run went on in the interrupted session, which is now finished.
    assert resumed.session_dir == interrupted.value.checkpoint_path.parent
    assert (resumed.session_dir / "checkpoint_final").is_dir()


def test_resume_refuses_a_checkpoint_of_other_settings(tiny_base_dir, sft_samples,
                                                       training_params):
    training_params.update(epochs=1)
    checkpoint_dir = training_params["checkpoint"]["dir"]
    flag = ShutdownFlag()

    def stop_after_step_2(report):
        if report.step == 2:
            flag.request(None)

    with pytest.raises(TrainingInterrupted) as interrupted:
        train_so8t(tiny_base_dir, sft_samples, training_params, checkpoint_dir=checkpoint_dir,
                   shutdown=flag, on_step=stop_after_step_2)
    emergency = interrupted.value.checkpoint_path

    changed = {**training_params, "batch_size": 3, "resume": "latest"}
    with pytest.raises(ResumeMismatchError) as mismatch:
        train_so8t(tiny_base_dir, sft_samples, changed, checkpoint_dir=checkpoint_dir)
    message = str(mismatch.value)
    assert "batch_size: 4 in the checkpoint, 3 now" in message
    assert "train_data" not in message and "base_model" not in message
    assert "training.resume_accept_changes=true" in message
    # Other training data: named as such.
    edited = sft_samples.copy()
    edited.loc[edited.index[0], "completion"] += "。"
    with pytest.raises(ResumeMismatchError, match="train_data: '[0-9a-f]{64}' in the checkpoint"):
        train_so8t(tiny_base_dir, edited, {**training_params, "resume": "latest"},
                   checkpoint_dir=checkpoint_dir)
    # A loss weight is not part of the fingerprint; the run goes on and finishes.
    reweighted = {**training_params, "resume": "latest",
                  "loss_weights": {**training_params["loss_weights"], "safety": 0.3}}
    result = train_so8t(tiny_base_dir, sft_samples, reweighted, checkpoint_dir=checkpoint_dir)
    assert result.summary["resumed_from"] == str(emergency)
    assert result.history["step"].tolist() == [3, 4, 5, 6]
    # The session has finished: 'latest' does not resume it again.
    with pytest.raises(CheckpointNotFoundError, match="finished"):
        train_so8t(tiny_base_dir, sft_samples, {**training_params, "resume": "latest"},
                   checkpoint_dir=checkpoint_dir)
