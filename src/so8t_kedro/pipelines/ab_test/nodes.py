"""Nodes of the `ab_test` pipeline: model A against model B on the same requests.

Each arm is a language model (scored by ``so8t_kedro.decision.scoring.score_model``, as the
evaluation scores it) or the reference classifier (``score_reference_classifier``), on the
same evaluation set, so every comparison is paired: McNemar's test on per-request
correctness, a paired bootstrap interval for the macro-F1 difference (and for the primary
metric), a Wilcoxon signed-rank test on per-request latency, and a verdict with two rules:
the primary metric significantly better, and the unsafe-miss rate not significantly worse
(McNemar on the truly unsafe requests). The statistics are ``so8t_kedro.decision.ab_statistics``.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from sklearn.pipeline import Pipeline

from so8t_kedro.decision.ab_statistics import (
    HIGHER_IS_BETTER,
    METRIC_FUNCTIONS,
    decide_winner,
    mcnemar_test,
    paired_bootstrap_ci,
    paired_latency_test,
    unsafe_miss_test,
)
from so8t_kedro.decision.metrics import (
    classification_metrics,
    expected_calibration_error,
    latency_summary,
    softmax,
)
from so8t_kedro.decision.scoring import (
    label_ids_of,
    score_model,
    score_reference_classifier,
    scores_of,
)
from so8t_kedro.models.selection import REFERENCE_CLASSIFIER, ModelReference
from so8t_kedro.reporting import html_report

logger = logging.getLogger(__name__)

# The metrics compared, in report order.
COMPARED_METRICS: tuple[str, ...] = ("accuracy", "macro_f1", "unsafe_miss_rate",
                                     "over_refusal_rate", "ece", "latency_p50_ms",
                                     "latency_p95_ms")
# How the primary metric's difference is judged significant.
_LATENCY_METRICS = ("latency_p50_ms", "latency_p95_ms")


def score_arm(
    records: pd.DataFrame,
    reference_classifier: Pipeline,
    model: ModelReference,
    scoring_params: Mapping[str, Any],
    sft_format: str,
) -> pd.DataFrame:
    """The predictions of one arm on ``records``: ``model`` (the arm's spec, resolved once)
    is a language model (``score_model``: base model, adapter as in ``evaluation.model``)
    or the reference classifier (the ``reference_classifier`` dataset: latest, or
    ``--load-versions``)."""
    if model.kind == REFERENCE_CLASSIFIER:
        return score_reference_classifier(reference_classifier, records, model.name)
    [predictions] = score_model([records], model, scoring_params, sft_format)
    return predictions


def _model_summary(predictions: pd.DataFrame, ece_bins: int) -> dict[str, Any]:
    label_metrics = classification_metrics(predictions["label"].tolist(),
                                           predictions["predicted"].tolist())
    latency = latency_summary(predictions["latency_ms"].tolist())
    return {
        "name": str(predictions["model"].iloc[0]),
        "base_model_dir": str(predictions["base_model_dir"].iloc[0]),
        "adapter_dir": str(predictions["adapter_dir"].iloc[0]),
        "accuracy": label_metrics["accuracy"],
        "macro_f1": label_metrics["macro_f1"],
        "unsafe_miss_rate": label_metrics["unsafe_miss_rate"],
        "over_refusal_rate": label_metrics["over_refusal_rate"],
        "ece": expected_calibration_error(softmax(scores_of(predictions)),
                                          label_ids_of(predictions), ece_bins),
        "latency_p50_ms": latency["p50"],
        "latency_p95_ms": latency["p95"],
    }


def _check_paired(predictions_a: pd.DataFrame, predictions_b: pd.DataFrame) -> None:
    ids_a, ids_b = predictions_a["id"].astype(str), predictions_b["id"].astype(str)
    if len(ids_a) != len(ids_b) or not (ids_a.to_numpy() == ids_b.to_numpy()).all():
        mismatch = next((i for i, (a, b) in enumerate(zip(ids_a, ids_b)) if a != b),
                        min(len(ids_a), len(ids_b)))
        raise ValueError(
            f"A/B predictions are not paired: A has {len(ids_a)} rows, B {len(ids_b)}, first "
            f"difference at row {mismatch}; score both models on the same evaluation_set"
        )


def _difference(a: float | None, b: float | None) -> dict[str, float | None]:
    if a is None or b is None:
        return {"absolute": None, "relative": None}
    return {"absolute": b - a, "relative": (b - a) / abs(a) if a else None}


def compare_models(predictions_a: pd.DataFrame, predictions_b: pd.DataFrame,
                   params: Mapping[str, Any]) -> dict[str, Any]:
    """Both models' metrics, their differences (B − A), the paired tests and the verdict.

    ``params`` (``params:ab_test``): ``primary_metric``, ``min_effect`` (the smallest
    absolute difference worth a winner), ``significance_level``, ``bootstrap``
    (``n_resamples``, ``seed``), ``ece_bins``.
    """
    _check_paired(predictions_a, predictions_b)
    primary = str(params["primary_metric"])
    alpha = float(params["significance_level"])
    if primary not in (*METRIC_FUNCTIONS, *_LATENCY_METRICS):
        raise ValueError(f"params:ab_test.primary_metric {primary!r} is not one of "
                         f"{sorted((*METRIC_FUNCTIONS, *_LATENCY_METRICS))}")
    bins = int(params["ece_bins"])
    models = {"A": _model_summary(predictions_a, bins), "B": _model_summary(predictions_b, bins)}
    y_true = predictions_a["label"].tolist()
    pred_a, pred_b = predictions_a["predicted"].tolist(), predictions_b["predicted"].tolist()

    def bootstrap(metric: str) -> dict[str, Any]:
        return paired_bootstrap_ci(y_true, pred_a, pred_b, METRIC_FUNCTIONS[metric],
                                   n_resamples=int(params["bootstrap"]["n_resamples"]),
                                   confidence=1 - alpha, seed=int(params["bootstrap"]["seed"]))

    mcnemar = mcnemar_test(predictions_a["correct"].to_numpy(bool),
                           predictions_b["correct"].to_numpy(bool))
    latency = paired_latency_test(predictions_a["latency_ms"].to_numpy(float),
                                  predictions_b["latency_ms"].to_numpy(float))
    intervals = {"macro_f1": bootstrap("macro_f1")}
    if primary in METRIC_FUNCTIONS and primary not in intervals:
        intervals[primary] = bootstrap(primary)

    # Accuracy is judged by McNemar (the test made for paired correctness), latency by
    # Wilcoxon, every other label metric by whether its bootstrap interval excludes 0.
    if primary == "accuracy":
        significant, evidence = mcnemar["p_value"] < alpha, f"McNemar p = {mcnemar['p_value']:.4g}"
    elif primary in _LATENCY_METRICS:
        significant, evidence = latency["p_value"] < alpha, f"Wilcoxon p = {latency['p_value']:.4g}"
    else:
        ci = intervals[primary]
        significant = not (ci["low"] <= 0 <= ci["high"])
        evidence = f"{ci['confidence']:.0%} bootstrap CI [{ci['low']:.4f}, {ci['high']:.4f}]"
    difference = _difference(models["A"][primary], models["B"][primary])["absolute"]
    unsafe_misses = unsafe_miss_test(y_true, pred_a, pred_b)
    verdict = decide_winner(metric=primary, difference=np.nan if difference is None else difference,
                            significant=bool(significant), min_effect=float(params["min_effect"]),
                            unsafe_miss=unsafe_misses, significance_level=alpha)
    verdict["evidence"] = evidence
    results = {
        "n_samples": len(predictions_a),
        "primary_metric": primary,
        "significance_level": alpha,
        "min_effect": float(params["min_effect"]),
        "models": models,
        "differences": {m: _difference(models["A"][m], models["B"][m]) for m in COMPARED_METRICS},
        "higher_is_better": {m: HIGHER_IS_BETTER[m] for m in COMPARED_METRICS},
        "mcnemar": mcnemar,
        "unsafe_miss_test": unsafe_misses,
        "bootstrap": intervals,
        "latency_test": latency,
        "verdict": verdict,
    }
    logger.info("A/B %s vs %s: %s. %s", models["A"]["name"], models["B"]["name"],
                verdict["decision"], verdict["reason"])
    return results


def plot_ab_comparison(ab_test_results: Mapping[str, Any], predictions_a: pd.DataFrame,
                       predictions_b: pd.DataFrame) -> Figure:
    """Label metrics side by side (with the macro-F1 difference's interval) and the
    per-request latency distributions."""
    models = ab_test_results["models"]
    names = {key: f"{key}: {models[key]['name']}" for key in ("A", "B")}
    figure = Figure(figsize=(12, 4.5), layout="constrained")
    metrics_axes, interval_axes, latency_axes = figure.subplots(
        1, 3, gridspec_kw={"width_ratios": [3, 1.2, 2]})
    shown = ["accuracy", "macro_f1", "unsafe_miss_rate", "over_refusal_rate", "ece"]
    x = np.arange(len(shown))
    for offset, key in ((-0.2, "A"), (0.2, "B")):
        values = [models[key][m] if models[key][m] is not None else np.nan for m in shown]
        metrics_axes.bar(x + offset, values, width=0.4, label=names[key])
    metrics_axes.set_xticks(x, [m.replace("_", "\n") for m in shown])
    metrics_axes.set(ylim=(0, 1.05), title=f"metrics on {ab_test_results['n_samples']} requests")
    metrics_axes.legend(loc="upper right")

    ci = ab_test_results["bootstrap"]["macro_f1"]
    interval_axes.errorbar([0], [ci["difference"]], fmt="o", capsize=8,
                           yerr=[[ci["difference"] - ci["low"]], [ci["high"] - ci["difference"]]])
    interval_axes.axhline(0, color="grey", linestyle="--")
    interval_axes.set(xticks=[], xlim=(-1, 1),
                      title=f"macro-F1 B − A\n{ci['confidence']:.0%} bootstrap CI")

    latency_axes.boxplot([predictions_a["latency_ms"], predictions_b["latency_ms"]])
    latency_axes.set_xticks([1, 2], [names["A"], names["B"]])
    latency_p = ab_test_results["latency_test"]["p_value"]
    latency_axes.set(ylabel="ms per request", title=f"latency (Wilcoxon p = {latency_p:.3g})")
    figure.suptitle(f"A/B verdict: {ab_test_results['verdict']['decision']}")
    return figure


def render_ab_test_report(ab_test_results: Mapping[str, Any], comparison_png: bytes) -> str:
    """One self-contained HTML page: verdict and its two rules, metric table with
    differences, tests, chart."""
    results = ab_test_results
    models, differences = results["models"], results["differences"]
    table = pd.DataFrame({
        f"A: {models['A']['name']}": [models["A"][m] for m in COMPARED_METRICS],
        f"B: {models['B']['name']}": [models["B"][m] for m in COMPARED_METRICS],
        "B − A": [differences[m]["absolute"] for m in COMPARED_METRICS],
        "relative": [differences[m]["relative"] for m in COMPARED_METRICS],
        "better": ["higher" if results["higher_is_better"][m] else "lower"
                   for m in COMPARED_METRICS],
    }, index=list(COMPARED_METRICS))
    tests = pd.DataFrame({
        "McNemar (paired correctness)": {
            "statistic": results["mcnemar"]["statistic"],
            "p-value": results["mcnemar"]["p_value"],
            "detail": f"A only right {results['mcnemar']['a_only_correct']}, B only right "
                      f"{results['mcnemar']['b_only_correct']} ({results['mcnemar']['method']})"},
        "McNemar (unsafe misses, truly unsafe requests)": {
            "statistic": results["unsafe_miss_test"]["statistic"],
            "p-value": results["unsafe_miss_test"]["p_value"],
            "detail": f"{results['unsafe_miss_test']['n_unsafe']} truly unsafe: A only missed "
                      f"{results['unsafe_miss_test']['a_only_missed']}, B only missed "
                      f"{results['unsafe_miss_test']['b_only_missed']} "
                      f"({results['unsafe_miss_test']['method']})"},
        "Wilcoxon signed-rank (latency)": {
            "statistic": results["latency_test"]["statistic"],
            "p-value": results["latency_test"]["p_value"],
            "detail": f"median B − A {results['latency_test']['median_difference_ms']:.3f} ms"},
        **{f"bootstrap {metric}": {
            "statistic": ci["difference"], "p-value": None,
            "detail": f"{ci['confidence']:.0%} CI [{ci['low']:.4f}, {ci['high']:.4f}], "
                      f"{ci['n_resamples']} paired resamples"}
           for metric, ci in results["bootstrap"].items()},
    }).T
    verdict = results["verdict"]
    rules = pd.DataFrame({
        "rule": [(f"1. {results['primary_metric']} significantly better by at least "
                  f"{results['min_effect']:g} ({verdict['evidence']})"),
                 ("2. unsafe-miss rate not significantly worse (McNemar on the truly unsafe "
                  "requests)")],
        "passed": ["yes" if verdict["rules"][name]["passed"] else "NO"
                   for name in ("primary_metric", "unsafe_miss_guardrail")],
        "numbers": [verdict["rules"][name]["reason"]
                    for name in ("primary_metric", "unsafe_miss_guardrail")],
    }).set_index("rule")
    return html_report.page(
        f"A/B test: {models['A']['name']} (A) vs {models['B']['name']} (B)", [
            f'<div class="verdict">{html_report.escape(verdict["decision"])}</div>',
            html_report.paragraph(f"A winner must pass both rules at significance level "
                                  f"{results['significance_level']}; "
                                  + (f"stopped by: {', '.join(verdict['stopped_by'])}."
                                     if verdict["stopped_by"] else "both passed.")),
            html_report.section("Verdict rules", html_report.table(rules)),
            html_report.section("Metrics", html_report.table(table)),
            html_report.section("Paired tests", html_report.table(tests)),
            html_report.section("Charts", html_report.image(comparison_png,
                                                            "metrics, macro-F1 interval, latency")),
            html_report.section("Models", html_report.table(pd.DataFrame({
                key: {"name": m["name"], "base model": m["base_model_dir"],
                      "adapter": m["adapter_dir"] or "(none)"} for key, m in models.items()}).T)),
        ])
