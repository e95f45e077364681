"""evaluate: score the trained model on the test split, beside the baselines it must beat.

Binary tasks get the positive class's ROC and precision-recall curves and precision, recall and F1
at the default threshold; multi-class tasks one-vs-rest curves (micro-averaged for the plot data)
and macro scores. Both get a threshold table (`thresholds.csv`): binary, the positive class's
precision/recall/F1 and the share flagged at each probability threshold; multi-class, the same
scores when predictions under a top-class confidence are withheld.

The baselines are fitted on the same train split and scored on the same test split: the majority
class and a logistic regression on standardised features. Their accuracies go into metrics.json,
and the register stage's `min_gain_over_baselines` gate refuses a model that does not beat them.
"""

from __future__ import annotations

import csv
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # files only; CI has no display

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
from sklearn import metrics as skm  # noqa: E402
from sklearn.dummy import DummyClassifier  # noqa: E402
from sklearn.linear_model import LogisticRegression  # noqa: E402
from sklearn.pipeline import make_pipeline  # noqa: E402
from sklearn.preprocessing import StandardScaler, label_binarize  # noqa: E402

from ml.catalog import load_catalog  # noqa: E402
from ml.checkpoint import load_checkpoint, predict_proba  # noqa: E402
from ml.cli import add_catalog_options, run_stage, stage_parser  # noqa: E402
from ml.config import load_params  # noqa: E402
from ml.data import Split, load_split  # noqa: E402
from ml.io import atomic_path, sha256_file, write_json  # noqa: E402
from ml.schema import TaskSpec  # noqa: E402

THRESHOLDS = np.round(np.linspace(0.05, 0.95, 19), 2)


def _roc_auc(y: np.ndarray, proba: np.ndarray, task: TaskSpec) -> float:
    if task.type == "binary":
        positive = (y == task.positive_index).astype(int)
        if positive.min() == positive.max():
            return float("nan")
        return float(skm.roc_auc_score(positive, proba[:, task.positive_index]))
    labels = list(range(task.num_classes))
    return float(skm.roc_auc_score(y, proba, multi_class="ovr", labels=labels))


def score(y: np.ndarray, proba: np.ndarray, task: TaskSpec) -> dict[str, Any]:
    """Headline metrics plus per-class precision/recall/F1/AUC and the confusion matrix."""
    labels = list(range(task.num_classes))
    predicted = proba.argmax(axis=1)
    precision, recall, f1, support = skm.precision_recall_fscore_support(
        y, predicted, labels=labels, zero_division=0
    )
    onehot = np.asarray(label_binarize(y, classes=labels))
    if task.type == "binary":  # label_binarize gives one column for two classes
        onehot = np.column_stack([1 - onehot[:, 0], onehot[:, 0]])
    per_class_auc = [
        (
            float(skm.roc_auc_score(onehot[:, c], proba[:, c]))
            if 0 < onehot[:, c].sum() < len(y)
            else float("nan")
        )
        for c in labels
    ]
    headline: dict[str, float | int] = {
        "accuracy": float(skm.accuracy_score(y, predicted)),
        "macro_f1": float(
            skm.f1_score(y, predicted, average="macro", labels=labels, zero_division=0)
        ),
        "roc_auc": _roc_auc(y, proba, task),
        "test_samples": int(len(y)),
    }
    if task.type == "binary":
        p = task.positive_index
        headline.update(
            precision=float(precision[p]),
            recall=float(recall[p]),
            f1=float(f1[p]),
            average_precision=float(skm.average_precision_score(onehot[:, p], proba[:, p])),
        )
    return {
        "headline": headline,
        "per_class": [
            {
                "class": task.classes[c],
                "precision": float(precision[c]),
                "recall": float(recall[c]),
                "f1": float(f1[c]),
                "roc_auc": per_class_auc[c],
                "support": int(support[c]),
            }
            for c in labels
        ],
        "confusion": skm.confusion_matrix(y, predicted, labels=labels).tolist(),
        "predicted": predicted,
        "onehot": onehot,
    }


def baselines(train: Split, test: Split, task: TaskSpec, seed: int) -> dict[str, dict[str, float]]:
    """The majority class and a logistic regression, fitted on train, scored on test."""
    majority = DummyClassifier(strategy="most_frequent").fit(train.X, train.y)
    logistic = make_pipeline(
        StandardScaler(), LogisticRegression(max_iter=5000, random_state=seed)
    ).fit(train.X, train.y)
    scores: dict[str, dict[str, float]] = {}
    for name, model in (("majority", majority), ("logistic_regression", logistic)):
        proba = np.zeros((len(test.y), task.num_classes))
        proba[:, model.classes_] = model.predict_proba(test.X)
        scores[name] = {
            "accuracy": float(skm.accuracy_score(test.y, proba.argmax(axis=1))),
            "roc_auc": _roc_auc(test.y, proba, task),
        }
    return scores


def threshold_rows(y: np.ndarray, proba: np.ndarray, task: TaskSpec) -> list[list[str]]:
    """threshold, precision, recall, f1, coverage (see the module docstring for each task)."""
    rows = []
    for t in THRESHOLDS:
        if task.type == "binary":
            p = task.positive_index
            flagged = proba[:, p] >= t
            hits = int((flagged & (y == p)).sum())
            precision = hits / max(int(flagged.sum()), 1)
            recall = hits / max(int((y == p).sum()), 1)
        else:
            flagged = proba.max(axis=1) >= t
            hits = int((flagged & (proba.argmax(axis=1) == y)).sum())
            precision = hits / max(int(flagged.sum()), 1)
            recall = hits / max(len(y), 1)
        f1 = 0.0 if precision + recall == 0 else 2 * precision * recall / (precision + recall)
        coverage = float(flagged.mean())
        rows.append(
            [f"{t:.2f}", f"{precision:.4f}", f"{recall:.4f}", f"{f1:.4f}", f"{coverage:.4f}"]
        )
    return rows


def _write_csv(path: Path, header: list[str], rows: Sequence[Sequence[object]]) -> None:
    with atomic_path(path) as tmp, open(tmp, "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(header)
        writer.writerows(rows)


def _save_figure(path: Path, figure: Any) -> None:
    with atomic_path(path) as tmp:
        # no Software/date metadata: the same figure is the same bytes (DVC hashes them)
        figure.savefig(tmp, format="png", dpi=90, bbox_inches="tight", metadata={"Software": None})
    plt.close(figure)


def _curves(
    y: np.ndarray, proba: np.ndarray, task: TaskSpec, onehot: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(fpr, tpr, recall, precision): the positive class's (binary) or micro-averaged curves."""
    if task.type == "binary":
        truth, score_ = onehot[:, task.positive_index], proba[:, task.positive_index]
    else:
        truth, score_ = onehot.ravel(), proba.ravel()
    fpr, tpr, _ = skm.roc_curve(truth, score_)
    precision, recall, _ = skm.precision_recall_curve(truth, score_)
    return fpr, tpr, recall, precision


def write_plots(
    plots: Path,
    figures: Path,
    y: np.ndarray,
    proba: np.ndarray,
    result: dict[str, Any],
    task: TaskSpec,
) -> None:
    plots.mkdir(parents=True, exist_ok=True)
    figures.mkdir(parents=True, exist_ok=True)
    names = task.classes
    _write_csv(
        plots / "confusion.csv",
        ["actual", "predicted"],
        [[names[a], names[p]] for a, p in zip(y.tolist(), result["predicted"].tolist())],
    )
    per_class = result["per_class"]
    _write_csv(
        plots / "per_class.csv",
        ["class", "precision", "recall", "f1", "roc_auc", "support"],
        [
            [
                r["class"],
                f"{r['precision']:.4f}",
                f"{r['recall']:.4f}",
                f"{r['f1']:.4f}",
                f"{r['roc_auc']:.4f}",
                r["support"],
            ]
            for r in per_class
        ],
    )
    fpr, tpr, recall, precision = _curves(y, proba, task, result["onehot"])
    _write_csv(
        plots / "roc.csv", ["fpr", "tpr"], [[f"{a:.5f}", f"{b:.5f}"] for a, b in zip(fpr, tpr)]
    )
    _write_csv(
        plots / "pr.csv",
        ["recall", "precision"],
        [[f"{a:.5f}", f"{b:.5f}"] for a, b in zip(recall, precision)],
    )
    thresholds = threshold_rows(y, proba, task)
    _write_csv(
        plots / "thresholds.csv", ["threshold", "precision", "recall", "f1", "coverage"], thresholds
    )

    figure, axis = plt.subplots(figsize=(5, 4.5))
    skm.ConfusionMatrixDisplay(np.array(result["confusion"]), display_labels=names).plot(
        ax=axis, colorbar=False
    )
    axis.set_title("Confusion matrix (test split)")
    _save_figure(figures / "confusion_matrix.png", figure)

    figure, axis = plt.subplots(figsize=(6, 3.5))
    classes = np.arange(len(per_class))
    for offset, key in ((-0.27, "precision"), (0.0, "recall"), (0.27, "f1")):
        axis.bar(classes + offset, [r[key] for r in per_class], width=0.27, label=key)
    axis.set_xticks(classes, [str(r["class"]) for r in per_class])
    axis.set_ylim(min(0.8, min(r["f1"] for r in per_class) - 0.05), 1.0)
    axis.set_xlabel("class")
    axis.legend(loc="lower right")
    axis.set_title("Per-class scores")
    _save_figure(figures / "per_class.png", figure)

    figure, (roc_axis, pr_axis) = plt.subplots(1, 2, figsize=(9, 4))
    if task.type == "binary":
        roc_axis.plot(fpr, tpr, lw=1, label=task.positive_class)
        pr_axis.plot(recall, precision, lw=1)
    else:
        onehot = result["onehot"]
        for c in range(onehot.shape[1]):
            if 0 < onehot[:, c].sum() < len(y):
                f, t, _ = skm.roc_curve(onehot[:, c], proba[:, c])
                roc_axis.plot(f, t, lw=1, label=names[c])
                p, r, _ = skm.precision_recall_curve(onehot[:, c], proba[:, c])
                pr_axis.plot(r, p, lw=1)
    roc_axis.set(title="ROC", xlabel="false positive rate", ylabel="true positive rate")
    pr_axis.set(title="Precision-recall", xlabel="recall", ylabel="precision")
    roc_axis.legend(fontsize=6, ncol=2, loc="lower right")
    _save_figure(figures / "roc_pr.png", figure)

    figure, axis = plt.subplots(figsize=(6, 3.5))
    table = np.array(thresholds, dtype=float)
    for column, label in ((1, "precision"), (2, "recall"), (3, "f1"), (4, "coverage")):
        axis.plot(table[:, 0], table[:, column], label=label)
    what = f"P({task.positive_class})" if task.type == "binary" else "top-class confidence"
    axis.set(title=f"Scores by threshold on {what}", xlabel="threshold", ylim=(0, 1.02))
    axis.legend(loc="lower left", fontsize=7)
    _save_figure(figures / "thresholds.png", figure)


def _main(argv: Sequence[str] | None) -> None:
    parser = stage_parser(__doc__ or "evaluate")
    parser.add_argument("--data", required=True)
    parser.add_argument("--model", required=True, help="the trained checkpoint (.pt)")
    parser.add_argument("--metrics", required=True, help="metrics.json for dvc metrics")
    parser.add_argument("--plots", required=True, help="directory for CSV plot data")
    parser.add_argument("--figures", required=True, help="directory for PNG renderings")
    add_catalog_options(parser)
    args = parser.parse_args(argv)
    params = load_params(args.params, args.shared_params)
    entry = load_catalog(args.catalog).get(args.name)
    train, test = load_split(args.data, "train"), load_split(args.data, "test")
    model = load_checkpoint(args.model)
    proba = predict_proba(model, torch.from_numpy(test.X)).numpy()
    result = score(test.y, proba, params.task)
    write_plots(Path(args.plots), Path(args.figures), test.y, proba, result, params.task)
    compared = baselines(train, test, params.task, params.seed)
    write_json(
        args.metrics,
        {
            **result["headline"],
            "baselines": compared,
            "per_class_f1": {r["class"]: round(r["f1"], 4) for r in result["per_class"]},
        },
    )

    import mlflow

    from ml.tracking import start_tracking, training_run

    catalog_root = Path(args.catalog).resolve().parent
    experiment_id = start_tracking(entry.experiment, catalog_root)
    run_id = training_run(experiment_id, entry.name, sha256_file(args.model))
    with mlflow.start_run(run_id=run_id):
        mlflow.log_metrics(
            {
                **{f"test_{k}": v for k, v in result["headline"].items() if k != "test_samples"},
                **{f"baseline_{k}_accuracy": v["accuracy"] for k, v in compared.items()},
            }
        )
        mlflow.log_artifacts(args.figures, artifact_path="figures")
        mlflow.log_artifact(args.metrics, artifact_path="metrics")
    h = result["headline"]
    best = max(compared.items(), key=lambda item: item[1]["accuracy"])
    print(
        f"evaluate: accuracy {h['accuracy']:.4f}, macro-F1 {h['macro_f1']:.4f},"
        f" ROC-AUC {h['roc_auc']:.4f} on {h['test_samples']} rows;"
        f" best baseline {best[0]} {best[1]['accuracy']:.4f}"
    )


def main(argv: Sequence[str] | None = None) -> int:
    return run_stage("evaluate", _main, argv)


if __name__ == "__main__":
    raise SystemExit(main())
