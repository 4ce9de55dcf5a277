"""Model cards: a Hugging Face ``README.md`` (YAML metadata + Markdown) for a model folder.

:func:`model_card` writes what a reader of the adapter or the baked model needs: the base
model, what SO8T changes, the training data (counts per label and language, its version),
the hyper-parameters, the evaluation beside the reference classifier and the majority
class with calibration, the limitations, and the intended and out-of-scope uses. The
licence fields are left empty for the model's owner to fill in.

Pure functions of plain data (dicts, a DataFrame): the tracking hook gathers the data from
the run and writes the card with :func:`write_model_card`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import pandas as pd
import yaml

from so8t_kedro.labels import LABELS

CARD_FILE = "README.md"
ModelKind = Literal["adapter", "baked"]

# (column title, key in a metrics dict, digits)
EVALUATION_COLUMNS = (
    ("accuracy", "accuracy"), ("macro-F1", "macro_f1"), ("unsafe-miss", "unsafe_miss_rate"),
    ("over-refusal", "over_refusal_rate"), ("ECE", "ece"), ("Brier", "brier"),
)


@dataclass(frozen=True)
class TrainingData:
    """The training split the model learnt from, as the card describes it."""

    counts: pd.DataFrame  # rows: labels, columns: languages, values: samples
    version: str | None   # the Kedro dataset version, None when not versioned

    @classmethod
    def from_samples(cls, samples: pd.DataFrame, version: str | None) -> TrainingData:
        """Counts of the ``split == "train"`` rows per label and language."""
        train = samples[samples["split"] == "train"] if "split" in samples else samples
        labels = train["label_id"].map(dict(enumerate(LABELS)))
        languages = train["language"] if "language" in train else pd.Series("?", train.index)
        counts = pd.crosstab(labels, languages).reindex(LABELS, fill_value=0)
        return cls(counts=counts, version=version)


def _flatten(params: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for key, value in params.items():
        if isinstance(value, Mapping):
            flat.update(_flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def _table(header: list[str], rows: list[list[Any]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(cell) for cell in row) + " |" for row in rows]
    return "\n".join(lines)


def _number(value: Any) -> str:
    return f"{value:.3f}" if isinstance(value, float) else ("–" if value is None else str(value))


def evaluation_section(metrics: Mapping[str, Any] | None) -> str:
    """The model, the reference classifier and the majority class side by side, and the
    model's calibration; a note when the model has not been evaluated."""
    if not metrics:
        return ("Not evaluated yet: run `kedro run --pipelines=evaluation`; the card is "
                "rewritten with the table when the evaluation of this folder is saved.")
    rows = [[metrics.get("model", "model")] + [_number(metrics.get(k)) for _, k in
                                                  EVALUATION_COLUMNS]]
    for name, baseline in (metrics.get("baselines") or {}).items():
        rows.append([baseline.get("model", name)]
                    + [_number(baseline.get(k)) for _, k in EVALUATION_COLUMNS])
    table = _table(["model"] + [title for title, _ in EVALUATION_COLUMNS], rows)
    before, after = metrics.get("uncalibrated") or {}, metrics.get("calibrated") or {}
    calibration = _table(
        ["", "temperature", "ECE", "Brier", "NLL"],
        [[state, *(_number(part.get(k)) for k in ("temperature", "ece", "brier", "nll"))]
         for state, part in (("uncalibrated", before), ("calibrated", after)) if part])
    return (f"On {metrics.get('n_samples', '?')} test samples (unsafe-miss: a DENY or "
            "REFUSE request decided ALLOW; over-refusal: an ALLOW request refused; ECE with "
            f"{metrics.get('ece_bins', '?')} bins):\n\n{table}\n\n"
            f"Temperature calibration of the model's four-class probabilities:\n\n"
            f"{calibration}")


def model_card(kind: ModelKind, *, base_model: str, params: Mapping[str, Any],
               data: TrainingData | None, evaluation: Mapping[str, Any] | None,
               languages: list[str] | None = None) -> str:
    """The card of an SO8T adapter (``kind="adapter"``) or baked model (``"baked"``).

    Args:
        base_model: the base model's name or folder.
        params: the hyper-parameters the model was trained with (nested dicts are flattened).
        data: the training data summary, None when the run did not load it.
        evaluation: the evaluation's metrics dict (``evaluation_metrics``), None when the
            model has not been evaluated.
    """
    languages = languages or (sorted(data.counts.columns) if data is not None else [])
    metadata = {
        "library_name": "peft" if kind == "adapter" else "transformers",
        "base_model": base_model,
        "pipeline_tag": "text-generation",
        "language": [language for language in languages if language != "?"],
        "tags": ["so8t", "safety", "text-classification", "kedro"]
        + (["lora", "qlora"] if kind == "adapter" else ["baked"]),
        # Left for the model's owner: the base model's licence binds the derivative.
        "license": None,
        "license_name": None,
        "license_link": None,
    }
    what = (
        "a PEFT adapter: LoRA weights plus the SO(8) rotation gates' parameters θ "
        "(`so8t_gates.safetensors`); load it on the base model with "
        "`so8t_kedro.so8t` (plain `PeftModel` would ignore the gates)"
        if kind == "adapter" else
        "a stock `Phi3ForCausalLM`: the trained adapter merged and each SO(8) rotation "
        "folded into its layer's `o_proj` weight (W′ = Rᵀ·W), so it loads with "
        "`transformers` (and converts to GGUF) without any SO8T code"
    )
    data_section = "Not recorded by this run." if data is None else (
        f"Dataset version: `{data.version or 'unversioned'}`. Training samples per label "
        "and language:\n\n"
        + _table(["label", *data.counts.columns],
                 [[label, *row] for label, row in zip(data.counts.index,
                                                        data.counts.values.tolist(),
                                                        strict=True)]))
    baked_note = ("Measured on the gated model this one was baked from: baking keeps its "
                  "logits (the export pipeline's `bake_verification` checks it).\n\n"
                  if kind == "baked" else "")
    hyper = _table(["parameter", "value"],
                   [[key, f"`{value}`"] for key, value in sorted(_flatten(params).items())])
    body = f"""# SO8T four-class safety model ({kind})

This folder holds {what}.

## What SO8T changes

The base model's attention output (after `o_proj`) in the chosen layers passes through
learnable SO(8) rotations, one 8×8 block per 8 hidden dimensions, R = exp(θ − θᵀ). They
are trained together with LoRA adapters on a loss that adds, to the language-model loss on
the assistant's tokens, a four-class decision loss (ALLOW / ESCALATION / DENY / REFUSE), a
smoothness (PET) regulariser on the last hidden state and an orthogonality regulariser on
the rotations. The decision is read from the model's own likelihood of each label after
the prompt and the decision prefix.

## Base model

`{base_model}`

## Training data

{data_section}

## Hyper-parameters

{hyper}

## Evaluation

{baked_note}{evaluation_section(evaluation)}

## Intended use

Deciding whether a request should be answered (ALLOW), handed to a person
(ESCALATION), declined by policy (DENY) or refused (REFUSE), in the `/think` format, behind
the project's `/think` service, which returns only the final part and the class's policy
reply for DENY and REFUSE.

## Out-of-scope use

- Serving the raw generations to users without that service: the replies contain the
  model's thinking, and its free answer to a DENY or REFUSE request.
- Any decision without a person in the loop where the reference classifier above does
  better, or on requests unlike the training data (other domains, other languages).
- Medical, legal or financial advice: ESCALATION exists to hand those to a person.

## Limitations

- The embedded default (a tiny `Phi3ForCausalLM` built by the pipeline when
  `base_model.path` is null) is a demonstration of the recipe, not a useful model.
- Ollama and llama.cpp serve the raw replies, thinking included: the `/think` service's
  filtering and policy replies do not apply there.
- The metrics above are on the project's test split; public benchmarks are the better
  measure of generalisation.

## Licence

Fill in `license`, `license_name` and `license_link` above: the base model's licence
governs this derivative.
"""
    front = yaml.safe_dump(metadata, sort_keys=False, allow_unicode=True)
    return f"---\n{front}---\n\n{body}"


def write_model_card(folder: Path, card: str) -> Path:
    """Write ``card`` as ``folder/README.md`` (replacing an earlier card)."""
    path = Path(folder) / CARD_FILE
    path.write_text(card, encoding="utf-8")
    return path
