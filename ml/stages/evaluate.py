"""evaluate: score the trained model on the test split; metrics for dvc/MLflow, plots for reports.

Writes metrics.json (dvc metrics), CSV plot data (confusion, per-class scores, micro-averaged ROC
and PR curves for dvc plots) and PNG renderings of each, and logs all of it to the train run.
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
from sklearn.preprocessing import label_binarize  # noqa: E402

from ml.checkpoint import load_checkpoint, predict_proba  # noqa: E402
from ml.cli import run_stage, stage_parser  # noqa: E402
from ml.config import load_params  # noqa: E402
from ml.data import load_split  # noqa: E402
from ml.io import atomic_path, read_json, write_json  # noqa: E402


def score(y: np.ndarray, proba: np.ndarray, num_classes: int) -> dict[str, Any]:
    """Headline metrics plus per-class precision/recall/F1/AUC and the confusion matrix."""
    labels = list(range(num_classes))
    predicted = proba.argmax(axis=1)
    precision, recall, f1, support = skm.precision_recall_fscore_support(
        y, predicted, labels=labels, zero_division=0
    )
    onehot = label_binarize(y, classes=labels)
    per_class_auc = [
        (
            float(skm.roc_auc_score(onehot[:, c], proba[:, c]))
            if 0 < onehot[:, c].sum() < len(y)
            else float("nan")
        )
        for c in labels
    ]
    return {
        "headline": {
            "accuracy": float(skm.accuracy_score(y, predicted)),
            "macro_f1": float(
                skm.f1_score(y, predicted, average="macro", labels=labels, zero_division=0)
            ),
            "roc_auc": float(skm.roc_auc_score(y, proba, multi_class="ovr", labels=labels)),
            "test_samples": int(len(y)),
        },
        "per_class": [
            {
                "class": c,
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


def _write_csv(path: Path, header: list[str], rows: Sequence[Sequence[object]]) -> None:
    with atomic_path(path) as tmp, open(tmp, "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(header)
        writer.writerows(rows)


def _save_figure(path: Path, figure: Any) -> None:
    with atomic_path(path) as tmp:
        figure.savefig(tmp, format="png", dpi=90, bbox_inches="tight")
    plt.close(figure)


def write_plots(
    plots: Path, figures: Path, y: np.ndarray, proba: np.ndarray, result: dict[str, Any]
) -> None:
    plots.mkdir(parents=True, exist_ok=True)
    figures.mkdir(parents=True, exist_ok=True)
    _write_csv(
        plots / "confusion.csv",
        ["actual", "predicted"],
        list(zip(y.tolist(), result["predicted"].tolist())),
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
    onehot = result["onehot"]
    fpr, tpr, _ = skm.roc_curve(onehot.ravel(), proba.ravel())
    _write_csv(
        plots / "roc.csv", ["fpr", "tpr"], [[f"{a:.5f}", f"{b:.5f}"] for a, b in zip(fpr, tpr)]
    )
    precision, recall, _ = skm.precision_recall_curve(onehot.ravel(), proba.ravel())
    _write_csv(
        plots / "pr.csv",
        ["recall", "precision"],
        [[f"{a:.5f}", f"{b:.5f}"] for a, b in zip(recall, precision)],
    )

    figure, axis = plt.subplots(figsize=(5, 4.5))
    skm.ConfusionMatrixDisplay(np.array(result["confusion"])).plot(ax=axis, colorbar=False)
    axis.set_title("Confusion matrix (test split)")
    _save_figure(figures / "confusion_matrix.png", figure)

    figure, axis = plt.subplots(figsize=(6, 3.5))
    classes = np.arange(len(per_class))
    for offset, key in ((-0.27, "precision"), (0.0, "recall"), (0.27, "f1")):
        axis.bar(classes + offset, [r[key] for r in per_class], width=0.27, label=key)
    axis.set_xticks(classes)
    axis.set_ylim(min(0.8, min(r["f1"] for r in per_class) - 0.05), 1.0)
    axis.set_xlabel("class")
    axis.legend(loc="lower right")
    axis.set_title("Per-class scores")
    _save_figure(figures / "per_class.png", figure)

    figure, (roc_axis, pr_axis) = plt.subplots(1, 2, figsize=(9, 4))
    for c in range(onehot.shape[1]):
        if 0 < onehot[:, c].sum() < len(y):
            f, t, _ = skm.roc_curve(onehot[:, c], proba[:, c])
            roc_axis.plot(f, t, lw=1, label=str(c))
            p, r, _ = skm.precision_recall_curve(onehot[:, c], proba[:, c])
            pr_axis.plot(r, p, lw=1)
    roc_axis.set(
        title="ROC (one-vs-rest)", xlabel="false positive rate", ylabel="true positive rate"
    )
    pr_axis.set(title="Precision-recall", xlabel="recall", ylabel="precision")
    roc_axis.legend(fontsize=6, ncol=2, loc="lower right")
    _save_figure(figures / "roc_pr.png", figure)


def _main(argv: Sequence[str] | None) -> None:
    parser = stage_parser(__doc__ or "evaluate")
    parser.add_argument("--data", required=True)
    parser.add_argument("--model", required=True)
    parser.add_argument("--run-info", required=True)
    parser.add_argument("--metrics", required=True, help="metrics.json for dvc metrics")
    parser.add_argument("--plots", required=True, help="directory for CSV plot data")
    parser.add_argument("--figures", required=True, help="directory for PNG renderings")
    args = parser.parse_args(argv)
    params = load_params(args.params)
    test = load_split(args.data, "test")
    model = load_checkpoint(args.model)
    proba = predict_proba(model, torch.from_numpy(test.X)).numpy()
    result = score(test.y, proba, params.data.num_classes)
    write_plots(Path(args.plots), Path(args.figures), test.y, proba, result)
    write_json(
        args.metrics,
        {
            **result["headline"],
            "per_class_f1": {str(r["class"]): round(r["f1"], 4) for r in result["per_class"]},
        },
    )

    import mlflow

    from ml.tracking import start_tracking

    start_tracking()
    with mlflow.start_run(run_id=read_json(args.run_info)["run_id"]):
        mlflow.log_metrics({f"test_{k}": v for k, v in result["headline"].items()})
        mlflow.log_artifacts(args.figures, artifact_path="figures")
        mlflow.log_artifact(args.metrics, artifact_path="metrics")
    h = result["headline"]
    print(
        f"evaluate: accuracy {h['accuracy']:.4f}, macro-F1 {h['macro_f1']:.4f},"
        f" ROC-AUC {h['roc_auc']:.4f} on {h['test_samples']} images"
    )


def main(argv: Sequence[str] | None = None) -> int:
    return run_stage("evaluate", _main, argv)


if __name__ == "__main__":
    raise SystemExit(main())
