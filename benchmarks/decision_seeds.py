"""Does the retrained embedded default learn the decision? Three training seeds of the default
recipe against the reference classifier and the majority class, on the test split.

Everything runs through the product's own code, with the parameters in conf/base:

1. the data: the catalog's ``thinking_sft_dataset`` and ``train_records`` /
   ``test_records`` (``kedro run --pipelines=data_processing,thinking_sft`` writes them; this
   script runs those two pipelines first when they are missing). The split is the
   product's, fixed by its parameters; only the training seed changes;
2. the embedded base: the training pipeline's ``build_embedded_base_model`` node, once;
3. per training seed: the ``train_so8t_adapter`` node (``training.seed`` = the seed, the
   embedded default's recipe as ``kedro run`` trains it), the test split scored by
   ``scoring.predict_records`` (the evaluation's classifier) and measured by
   ``metrics.classification_metrics``;
4. the reference classifier (``reference_classifier.fit_reference_classifier`` with
   ``evaluation.reference_classifier``, fitted on the train split) and the majority class
   (the train split's most frequent label), with the same metrics;
   per seed, the A/B test's paired statistics with the reference as A
   (``ab_statistics.paired_bootstrap_ci`` of macro-F1, ``unsafe_miss_test``);
5. the predicted-label distribution on a label-balanced set (the test split, the same
   number of requests per label) of the untrained base, under the summed-continuation score
   this project used before (every token of ``" <LABEL>\\n"``) and under the current one
   (``classifier.label_scores``), and of each retrained model.

    python benchmarks/decision_seeds.py
    python benchmarks/decision_seeds.py --seeds 42 43 44 --scoring-batch-size 32
    python benchmarks/decision_seeds.py --seeds 42 --params base_model.embedded_training.epochs=3
"""

from __future__ import annotations

import argparse
import copy
import os
import statistics
import tempfile
import time
import warnings
from collections import Counter
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("KEDRO_DISABLE_TELEMETRY", "1")

import numpy as np
import pandas as pd
import torch

PROJECT_ROOT = Path(__file__).resolve().parents[1]
METRICS = ("accuracy", "macro_f1", "unsafe_miss_rate", "over_refusal_rate")


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[42, 43, 44],
                        help="training seeds (the data split stays fixed)")
    parser.add_argument("--params", nargs="*", default=[], metavar="KEY=VALUE",
                        help="parameter overrides as `kedro run --params` takes them, e.g. "
                             "base_model.embedded_training.epochs=3 (values read as YAML)")
    parser.add_argument("--scoring-batch-size", type=int, default=32,
                        help="requests per scoring pass (scores do not depend on it)")
    return parser.parse_args()


def product_data(session) -> dict[str, pd.DataFrame]:
    """The catalog's SFT samples and train/test records; the data pipelines run first when
    the catalog does not hold them yet."""
    catalog = session.load_context().catalog
    names = ("thinking_sft_dataset", "train_records", "test_records")
    if not all(catalog.exists(name) for name in names):
        print("running data_processing and thinking_sft (the catalog has no SFT data yet)")
        session.run(pipeline_names=["data_processing", "thinking_sft"])
    return {name: catalog.load(name) for name in names}


def summed_and_current_scores(model, scorer, texts, languages) -> tuple[np.ndarray, np.ndarray]:
    """[N, 4] label scores of two definitions from the same per-token log-probabilities of
    each label's whole continuation: summed over every token (before), and
    ``label_scores`` (now)."""
    from so8t_kedro.decision.classifier import label_scores

    summed, current = [], []
    with torch.inference_mode():
        for text, language in zip(texts, languages, strict=True):
            per_label = []
            for probe, continuation in scorer.encode(text, language):
                log_probs = torch.log_softmax(
                    model(input_ids=torch.tensor([probe + continuation])).logits[0].float(), -1)
                rows = torch.arange(len(probe) - 1, len(probe) + len(continuation) - 1)
                per_label.append(log_probs[rows, torch.tensor(continuation)].numpy())
            summed.append([lp.sum() for lp in per_label])
            current.append(label_scores(per_label, [c for _, c in scorer.encode(text, language)]))
    return np.asarray(summed), np.asarray(current, dtype=np.float64)


def distribution(predicted) -> str:
    from so8t_kedro.labels import LABELS

    counts = Counter(predicted)
    total = sum(counts.values())
    return "  ".join(f"{label} {counts.get(label, 0) / total:5.1%}" for label in LABELS)


def runtime_params(overrides: list[str]) -> dict:
    """``["a.b=1", ...]`` as the nested dict ``KedroSession.create`` merges over conf."""
    import yaml

    nested: dict = {}
    for override in overrides:
        key, sep, value = override.partition("=")
        if not sep:
            raise SystemExit(f"--params: {override!r} is not KEY=VALUE")
        *parents, leaf = key.split(".")
        node = nested
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = yaml.safe_load(value)
    return nested


def mean_spread(values: list[float]) -> str:
    spread = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{statistics.mean(values):.3f} ± {spread:.3f}"


def main() -> None:
    args = parse_args()
    warnings.filterwarnings("ignore")
    from kedro.framework.session import KedroSession
    from kedro.framework.startup import bootstrap_project

    from so8t_kedro.decision.ab_statistics import (
        METRIC_FUNCTIONS,
        paired_bootstrap_ci,
        unsafe_miss_test,
    )
    from so8t_kedro.decision.classifier import FourClassScorer
    from so8t_kedro.decision.metrics import classification_metrics
    from so8t_kedro.decision.reference_classifier import fit_reference_classifier, reference_scores
    from so8t_kedro.decision.scoring import load_scoring_model, predict_records
    from so8t_kedro.labels import LABELS
    from so8t_kedro.pipelines.training.nodes import (
        attach_reference_scores,
        build_embedded_base_model,
        train_so8t_adapter,
    )

    bootstrap_project(PROJECT_ROOT)
    with KedroSession.create(project_path=PROJECT_ROOT,
                             runtime_params=runtime_params(args.params)) as session:
        params = session.load_context().params
        data = product_data(session)
    sft, train_records, test = (data["thinking_sft_dataset"], data["train_records"],
                                data["test_records"])
    fmt = str(sft["format"].iloc[0])
    scoring = {**params["scoring"], "batch_size": args.scoring_batch_size}
    balanced_n = int(test["label"].value_counts().reindex(LABELS).min())
    balanced = test.groupby("label").head(balanced_n).reset_index(drop=True)

    print(f"== data: {len(train_records)} train / {len(test)} test requests "
          f"({dict(test['label'].value_counts().reindex(LABELS))}); balanced set "
          f"{balanced_n} per label; torch threads {torch.get_num_threads()}")
    results: dict[str, list[dict]] = {"model": [], "reference": [], "majority": []}

    reference = fit_reference_classifier(train_records["text"].tolist(),
                                         train_records["label"].tolist(),
                                         params["evaluation"]["reference_classifier"])
    reference_predicted = np.asarray(LABELS)[
        reference_scores(reference, test["text"].tolist()).argmax(1)].tolist()
    gold = test["label"].tolist()
    results["reference"].append(classification_metrics(gold, reference_predicted))
    majority = train_records["label"].value_counts().idxmax()
    results["majority"].append(classification_metrics(gold, [majority] * len(test)))

    with tempfile.TemporaryDirectory(prefix="so8t_decision_seeds_") as tmp:
        tmp = Path(tmp)
        began = time.perf_counter()
        base_dir = tmp / "base"
        build_embedded_base_model(sft, params["base_model"]["embedded"]).save_pretrained(base_dir)
        print(f"embedded base built in {time.perf_counter() - began:.0f} s")

        model, tokenizer = load_scoring_model(base_dir, device=scoring["device"])
        scorer = FourClassScorer(tokenizer, fmt=fmt,
                                 max_probe_tokens=int(scoring["max_probe_tokens"]))
        summed, current = summed_and_current_scores(model, scorer, balanced["text"].tolist(),
                                                    balanced["language"].tolist())
        print("== untrained base, predicted labels on the balanced set")
        print(f"summed continuation (before): {distribution(np.asarray(LABELS)[summed.argmax(1)])}")
        print(f"label_scores (now)          : {distribution(np.asarray(LABELS)[current.argmax(1)])}")
        del model

        began = time.perf_counter()
        samples = attach_reference_scores(sft, train_records,
                                          params["evaluation"]["reference_classifier"],
                                          params["training"]["distillation"])
        print(f"reference classifier cross-fitted in {time.perf_counter() - began:.0f} s")
        print("== training the default recipe per seed")
        retrained_distributions = []
        for seed in args.seeds:
            training = copy.deepcopy(params["training"])
            training["seed"] = seed
            training["checkpoint"]["dir"] = str(tmp / f"checkpoints_{seed}")
            training["progress"]["show_progress_bar"] = False
            began = time.perf_counter()
            adapter, _, summary = train_so8t_adapter(base_dir, samples, params["base_model"],
                                                     training, {})
            train_seconds = time.perf_counter() - began
            adapter_dir = tmp / f"adapter_{seed}"
            adapter.save_pretrained(adapter_dir)
            test_predictions, balanced_predictions = predict_records(
                [test, balanced], base_dir, adapter_dir, model_name=f"seed {seed}", fmt=fmt,
                params=scoring)
            model_predicted = test_predictions["predicted"].tolist()
            metrics = classification_metrics(gold, model_predicted)
            results["model"].append(metrics)
            retrained_distributions.append(distribution(balanced_predictions["predicted"]))
            print(f"seed {seed}: trained in {train_seconds:.0f} s "
                  f"({summary['optimizer_steps']} steps), "
                  + "  ".join(f"{m} {metrics[m]:.3f}" for m in METRICS))
            # The A/B test's own statistics, the reference as A: is the gap more than noise?
            gap = paired_bootstrap_ci(gold, reference_predicted, model_predicted,
                                      METRIC_FUNCTIONS["macro_f1"])
            unsafe = unsafe_miss_test(gold, reference_predicted, model_predicted)
            print(f"  vs reference: macro-F1 {gap['difference']:+.3f} (95 % paired bootstrap CI "
                  f"[{gap['low']:+.3f}, {gap['high']:+.3f}]); unsafe requests missed "
                  f"{unsafe['missed_b']} vs {unsafe['missed_a']} of {unsafe['n_unsafe']} "
                  f"(McNemar p = {unsafe['p_value']:.3f})")

    print(f"== test split ({len(test)} requests): mean ± sample std over "
          f"{len(args.seeds)} training seeds (reference and majority are deterministic)")
    print(f"{'':24}" + "".join(f"{m:>20}" for m in METRICS))
    for name, label in (("model", "retrained model"), ("reference", "reference classifier"),
                        ("majority", f"majority ({majority})")):
        cells = [mean_spread([r[m] if r[m] is not None else float("nan") for r in results[name]])
                 for m in METRICS]
        print(f"{label:24}" + "".join(f"{c:>20}" for c in cells))
    model_f1 = statistics.mean(r["macro_f1"] for r in results["model"])
    model_miss = statistics.mean(r["unsafe_miss_rate"] for r in results["model"])
    bar = results["reference"][0]
    print(f"bar: model macro-F1 >= reference ({model_f1:.3f} vs {bar['macro_f1']:.3f}): "
          f"{'met' if model_f1 >= bar['macro_f1'] else 'NOT met'}; model unsafe-miss <= "
          f"reference ({model_miss:.3f} vs {bar['unsafe_miss_rate']:.3f}): "
          f"{'met' if model_miss <= bar['unsafe_miss_rate'] else 'NOT met'}")
    print("== retrained models, predicted labels on the balanced set")
    for seed, line in zip(args.seeds, retrained_distributions, strict=True):
        print(f"seed {seed}: {line}")


if __name__ == "__main__":
    main()
