"""Optuna search: the objective's arithmetic, the parameter overrides, a real study on the
tiny model, pruning, and resuming a study whose process was killed."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import optuna
import pytest
import yaml
from optuna.trial import FixedTrial, TrialState

from so8t_kedro.labels import LABEL_TO_ID
from so8t_kedro.training.hpo import (
    apply_overrides,
    best_parameters,
    objective_terms,
    objective_value,
    run_study,
    study_storage,
    suggest_parameters,
    trials_table,
)
from tests.helpers.optuna_study import running_study_trials

PROJECT_ROOT = Path(__file__).resolve().parents[2]
WORKER = Path(__file__).with_name("_hpo_worker.py")


@pytest.fixture
def hpo_params(tmp_path) -> dict:
    """The project's search parameters with a budget of a few CPU seconds per trial."""
    params = yaml.safe_load((PROJECT_ROOT / "conf/base/parameters_training.yml").read_text())
    params = params["hpo"]
    params.update(enabled=True, n_trials=2, n_startup_trials=1, steps_per_trial=2,
                  eval_every_steps=1)
    params["heartbeat"].update(interval_seconds=1, grace_period_seconds=1)
    return params


def sqlite_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'study.db'}"


# ----------------------------------------------------------------------- objective


def test_objective_terms_and_value_by_hand():
    # 8 requests: REFUSE ×4 (3 right), ESCALATION ×2 (1 right), ALLOW ×1, DENY ×1 (right).
    true = ["REFUSE"] * 4 + ["ESCALATION"] * 2 + ["ALLOW", "DENY"]
    predicted = ["REFUSE", "REFUSE", "REFUSE", "DENY", "ESCALATION", "ALLOW", "ALLOW", "DENY"]
    probabilities = np.full((8, 4), 0.1)
    for row, label in enumerate(predicted):
        probabilities[row, LABEL_TO_ID[label]] = 0.7
    terms = objective_terms(probabilities, [LABEL_TO_ID[t] for t in true], ece_bins=15)

    # F1 per class: ALLOW p=1/2 r=1 -> 2/3; ESCALATION p=1 r=1/2 -> 2/3;
    # DENY p=1/2 r=1 -> 2/3; REFUSE p=1 r=3/4 -> 6/7.
    macro_f1 = (2 / 3 * 3 + 6 / 7) / 4
    # Every confidence is 0.7 (one bin), accuracy 6/8: ECE = |0.75 - 0.7|.
    assert terms == pytest.approx({"refuse_recall": 0.75, "escalation_recall": 0.5,
                                   "macro_f1": macro_f1, "one_minus_ece": 0.95})
    weights = {"refuse_recall": 0.5, "escalation_recall": 0.2, "macro_f1": 0.2,
               "one_minus_ece": 0.1}
    assert objective_value(terms, weights) == pytest.approx(
        0.5 * 0.75 + 0.2 * 0.5 + 0.2 * macro_f1 + 0.1 * 0.95)


def test_objective_weights_must_name_known_terms():
    terms = dict.fromkeys(("refuse_recall", "escalation_recall", "macro_f1", "one_minus_ece"),
                          1.0)
    with pytest.raises(ValueError, match="refusal_recall"):
        objective_value(terms, {"refusal_recall": 1.0})
    with pytest.raises(KeyError):  # every term needs its weight
        objective_value(terms, {"refuse_recall": 1.0})


# ----------------------------------------------------------------------- overrides


def test_overrides_reach_their_training_parameters(training_params):
    before = json.dumps(training_params, sort_keys=True)
    params = apply_overrides(training_params, {
        "pet_lambda": 0.02, "safety_weight": 0.15, "cmd_weight": 0.85, "temperature": 1.5,
        "learning_rate": 1e-4, "lora.r": 16,
    })
    assert params["pet_schedule"]["values"] == pytest.approx([0.002, 0.01, 0.02])
    assert params["loss_weights"]["safety"] == 0.15
    assert params["loss_weights"]["cmd"] == 0.85
    assert params["safety_temperature"] == 1.5
    assert params["learning_rate"] == 1e-4 and params["lora"]["r"] == 16
    assert json.dumps(training_params, sort_keys=True) == before  # a copy, not in place
    assert apply_overrides(training_params, {}) == training_params


def test_an_override_of_a_missing_parameter_names_it(training_params):
    with pytest.raises(KeyError, match="lora.rank"):
        apply_overrides(training_params, {"lora.rank": 8})


def test_search_space_kinds():
    space = {"pet_lambda": {"low": 1e-3, "high": 0.1, "log": True},
             "lora.r": {"low": 8, "high": 64, "type": "int", "step": 8},
             "init": {"choices": ["normal", "zero"]}}
    trial = FixedTrial({"pet_lambda": 0.01, "lora.r": 32, "init": "zero"})
    assert suggest_parameters(trial, space) == {"pet_lambda": 0.01, "lora.r": 32,
                                                "init": "zero"}
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    for _ in range(20):
        values = suggest_parameters(study.ask(), space)
        assert 1e-3 <= values["pet_lambda"] <= 0.1
        assert values["lora.r"] in range(8, 65, 8) and values["init"] in ("normal", "zero")


# ----------------------------------------------------------------------- studies


def test_study_on_the_tiny_model(tiny_base_dir, sft_samples, training_params, hpo_params,
                                 tmp_path):
    url = sqlite_url(tmp_path)
    study = run_study(tiny_base_dir, sft_samples, training_params, hpo_params,
                      study_storage(url, hpo_params))

    loaded = optuna.load_study(study_name=hpo_params["study_name"], storage=url)
    assert [t.state for t in loaded.trials] == [TrialState.COMPLETE] * 2
    # Reported at every step of the 2-step budget; the value is the last report.
    for trial in loaded.trials:
        assert sorted(trial.intermediate_values) == [1, 2]
        assert trial.value == trial.intermediate_values[2]
        assert trial.value == pytest.approx(objective_value(trial.user_attrs["terms"],
                                                            hpo_params["objective_weights"]))
        final = list(Path(trial.user_attrs["checkpoint_dir"]).glob("*/checkpoint_final"))
        assert len(final) == 1
        assert json.loads((final[0] / "checkpoint.json").read_text())["step"] == 2
    best = best_parameters(study)
    assert set(best) == set(hpo_params["search_space"])
    assert best == max(loaded.trials, key=lambda t: t.value).params
    table = trials_table(loaded)
    assert table["number"].tolist() == [0, 1] and table["value"].notna().all()

    # Run again: the study already holds n_trials finished trials, nothing more runs.
    run_study(tiny_base_dir, sft_samples, training_params, hpo_params,
              study_storage(url, hpo_params))
    assert len(optuna.load_study(study_name=hpo_params["study_name"], storage=url).trials) == 2


def test_median_pruner_stops_a_worse_trial(tiny_base_dir, sft_samples, training_params,
                                           hpo_params, tmp_path):
    """Trial 0 at T = 1; trial 1 at T = 0.01 makes the probabilities one-hot, so its ECE is
    1 − accuracy and, with the objective on (1 − ECE) alone, it falls below the median of
    trial 0 at its first report and is pruned there."""
    hpo_params["search_space"] = {"temperature": {"low": 0.01, "high": 1.0}}
    hpo_params["objective_weights"] = {"refuse_recall": 0, "escalation_recall": 0,
                                       "macro_f1": 0, "one_minus_ece": 1}
    hpo_params["pruner"].update(n_startup_trials=1, n_warmup_steps=0)
    url = sqlite_url(tmp_path)
    study = optuna.create_study(study_name=hpo_params["study_name"], storage=url,
                                direction="maximize")
    study.enqueue_trial({"temperature": 1.0})
    study.enqueue_trial({"temperature": 0.01})
    run_study(tiny_base_dir, sft_samples, training_params, hpo_params,
              study_storage(url, hpo_params))

    first, second = optuna.load_study(study_name=hpo_params["study_name"], storage=url).trials
    assert first.state == TrialState.COMPLETE
    assert second.state == TrialState.PRUNED
    assert sorted(second.intermediate_values) == [1]
    assert second.intermediate_values[1] < first.intermediate_values[1]


def test_a_killed_study_resumes(tiny_base_dir, sft_samples, training_params, hpo_params,
                                tmp_path):
    """Kill the study's process in the middle of trial 1, run it again: the killed trial is
    failed by the heartbeat, retried with its parameters from its own checkpoints, and the
    study goes on to n_trials finished trials."""
    hpo_params.update(steps_per_trial=4)
    training_params["checkpoint"]["interval_seconds"] = 0  # a checkpoint after every step
    url = sqlite_url(tmp_path)
    files = {"samples": tmp_path / "samples.jsonl", "training": tmp_path / "training.json",
             "hpo": tmp_path / "hpo.json"}
    sft_samples.to_json(files["samples"], orient="records", lines=True, force_ascii=False)
    files["training"].write_text(json.dumps(training_params))
    files["hpo"].write_text(json.dumps(hpo_params))
    worker = subprocess.Popen(
        [sys.executable, str(WORKER), str(tiny_base_dir), *map(str, files.values()), url],
        env={**os.environ, "PYTHONPATH": str(PROJECT_ROOT / "src")})

    def running_trial_with_reports():
        trials = running_study_trials(url, hpo_params["study_name"])
        return next((t for t in trials if t.number == 1 and t.state == TrialState.RUNNING
                     and len(t.intermediate_values) >= 2), None)

    deadline = time.monotonic() + 300
    while (killed := running_trial_with_reports()) is None:
        assert worker.poll() is None, "the study finished before it could be killed"
        assert time.monotonic() < deadline, "trial 1 never started reporting"
        time.sleep(0.2)
    worker.send_signal(signal.SIGKILL)
    worker.wait(timeout=30)
    time.sleep(hpo_params["heartbeat"]["grace_period_seconds"] + 1.5)  # let it go stale

    run_study(tiny_base_dir, sft_samples, training_params, hpo_params,
              study_storage(url, hpo_params))

    trials = optuna.load_study(study_name=hpo_params["study_name"], storage=url).trials
    states = [t.state for t in trials]
    assert states == [TrialState.COMPLETE, TrialState.FAIL, TrialState.COMPLETE]
    retried = trials[2]
    assert retried.system_attrs["failed_trial"] == killed.number == 1
    assert retried.params == killed.params
    # The retry trained on in the killed trial's session, from its last checkpoint (one
    # after each step, written after that step's report: with 2 reports, step 1's is on
    # disk), to the end of the budget.
    folder = Path(killed.user_attrs["checkpoint_dir"])
    assert retried.user_attrs["checkpoint_dir"] == str(folder)
    [session] = [p for p in folder.iterdir() if p.is_dir()]
    resumed_from = Path(retried.user_attrs["resumed_from"])
    assert resumed_from.parent == session
    assert json.loads((resumed_from / "checkpoint.json").read_text())["step"] >= 1
    final = session / "checkpoint_final" / "checkpoint.json"
    assert json.loads(final.read_text())["step"] == 4



def test_a_schema_race_on_a_new_database_is_retried(monkeypatch, hpo_params, tmp_path):
    """Two workers on a new SQLite file both stamp its schema version: the slower one's
    IntegrityError (or a locked file) is retried, and it then opens the storage the other
    made; an error that persists still reaches the caller."""
    from sqlalchemy.exc import IntegrityError

    from so8t_kedro.training import hpo

    real, calls = hpo.RDBStorage, []

    def racing(*args, **kwargs):
        calls.append(args[0])
        if len(calls) == 1:
            real(*args, **kwargs)  # the other worker's stamp lands first ...
            raise IntegrityError("INSERT INTO alembic_version", {}, Exception("UNIQUE"))
        return real(*args, **kwargs)

    monkeypatch.setattr(hpo, "time", type("Clock", (), {"sleep": staticmethod(lambda s: None)}))
    monkeypatch.setattr(hpo, "RDBStorage", racing)
    url = sqlite_url(tmp_path)
    storage = study_storage(url, hpo_params)
    assert isinstance(storage, real) and calls == [url, url]

    def always(*args, **kwargs):
        raise IntegrityError("INSERT INTO alembic_version", {}, Exception("UNIQUE"))

    monkeypatch.setattr(hpo, "RDBStorage", always)
    with pytest.raises(IntegrityError):
        study_storage(url, hpo_params)
