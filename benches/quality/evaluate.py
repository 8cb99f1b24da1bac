"""Anomaly-detection quality: Contrail's Isolation Forest against scikit-learn's.

usage: evaluate.py TRAIN.parquet TEST.parquet TEST_LABELS.jsonl MODEL.json

TRAIN/TEST are `contrail features` outputs (TEST scored with MODEL). Labels are the
simulator's side file; a record is anomalous when (icao24, last_contact) is labelled.
Prints ROC-AUC, precision/recall/F1 at the model's threshold and at a 1% false-positive
rate, and recall per anomaly kind, for:
  - contrail: the model file's scores (from the DataFusion UDF, as the pipeline computes them);
  - sklearn-12: scikit-learn IsolationForest on the original design's 12 single-record features;
  - sklearn-same: scikit-learn IsolationForest on the model's own features.
"""
import json
import sys
import time

import numpy as np
import pyarrow.parquet as pq
from sklearn.ensemble import IsolationForest
from sklearn.metrics import roc_auc_score

SINGLE_RECORD = [
    "latitude", "longitude", "velocity_knots", "altitude_ft", "vertical_rate_fpm", "heading",
    "hour_sin", "hour_cos", "day_of_week_sin", "day_of_week_cos", "velocity_anomaly", "altitude_anomaly",
]


def matrix(table, names, medians=None):
    cols = [table.column(n).to_numpy(zero_copy_only=False).astype(float) for n in names]
    x = np.column_stack(cols)
    if medians is None:
        medians = np.nanmedian(x, axis=0)
        medians = np.where(np.isnan(medians), 0.0, medians)
    idx = np.where(np.isnan(x))
    x[idx] = np.take(medians, idx[1])
    return x, medians


def at_fpr(scores, y, fpr):
    threshold = np.quantile(scores[y == 0], 1 - fpr)
    return threshold


def metrics(scores, y, kinds, threshold):
    flagged = scores >= threshold
    tp = int(np.sum(flagged & (y == 1)))
    fp = int(np.sum(flagged & (y == 0)))
    fn = int(np.sum(~flagged & (y == 1)))
    precision = tp / (tp + fp) if tp + fp else 0.0
    recall = tp / (tp + fn) if tp + fn else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    per_kind = {}
    for kind in sorted(set(k for k in kinds if k)):
        mask = kinds == kind
        per_kind[kind] = float(np.mean(flagged[mask]))
    fpr = fp / max(1, int(np.sum(y == 0)))
    return precision, recall, f1, fpr, per_kind


def main():
    train_path, test_path, labels_path, model_path = sys.argv[1:5]
    model = json.load(open(model_path))
    features = model["features"]
    train = pq.read_table(train_path)
    test = pq.read_table(test_path)

    labels = {}
    for line in open(labels_path):
        l = json.loads(line)
        labels[(l["icao24"], l["last_contact"])] = l["kind"]
    keys = zip(test.column("icao24").to_pylist(), test.column("last_contact").to_pylist())
    kinds = np.array([labels.get(k, "") for k in keys], dtype=object)
    y = (kinds != "").astype(int)
    print(f"test rows {len(y)}, labelled anomalies {int(y.sum())} ({y.mean():.2%}); train rows {train.num_rows}")

    results = {}
    contrail = test.column("anomaly_score").to_numpy(zero_copy_only=False).astype(float)
    results["contrail"] = (contrail, model["threshold"], None)

    for name, cols in [("sklearn-12", SINGLE_RECORD), ("sklearn-same", features)]:
        x_train, med = matrix(train, cols)
        x_test, _ = matrix(test, cols, med)
        forest = IsolationForest(n_estimators=100, max_samples=256, random_state=0, n_jobs=1)
        t0 = time.perf_counter()
        forest.fit(x_train)
        fit_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        scores = -forest.score_samples(x_test)  # the paper's s(x), in (0, 1]
        score_s = time.perf_counter() - t0
        results[name] = (scores, 0.5, (fit_s, len(x_train), score_s, len(x_test)))

    print()
    print("| model | features | ROC-AUC | precision / recall / F1 (FPR) at threshold | precision / recall / F1 at 1% FPR |")
    print("|---|---|---|---|---|")
    per_kind_rows = []
    for name, (scores, threshold, _) in results.items():
        auc = roc_auc_score(y, scores)
        p, r, f, fpr, _ = metrics(scores, y, kinds, threshold)
        t1 = at_fpr(scores, y, 0.01)
        p1, r1, f1, _, kind1 = metrics(scores, y, kinds, t1)
        nfeat = len(SINGLE_RECORD) if name == "sklearn-12" else len(features)
        print(f"| {name} | {nfeat} | {auc:.3f} | {p:.3f} / {r:.3f} / {f:.3f} ({fpr:.1%}) | {p1:.3f} / {r1:.3f} / {f1:.3f} |")
        kind_auc = {}
        for kind in kind1:
            mask = (kinds == kind) | (y == 0)
            kind_auc[kind] = roc_auc_score(y[mask], scores[mask])
        per_kind_rows.append((name, kind1, kind_auc))
    print()
    kinds_all = sorted(per_kind_rows[0][1])
    print("| model | " + " | ".join(f"{k} recall@1%FPR (AUC)" for k in kinds_all) + " |")
    print("|---|" + "---|" * len(kinds_all))
    for name, recall, auc in per_kind_rows:
        print(f"| {name} | " + " | ".join(f"{recall[k]:.3f} ({auc[k]:.3f})" for k in kinds_all) + " |")
    print()
    for name, (_, _, timing) in results.items():
        if timing:
            fit_s, n_fit, score_s, n_score = timing
            print(f"{name}: fit {n_fit} rows in {fit_s:.3f} s; scored {n_score} rows in {score_s:.3f} s ({n_score / score_s:,.0f} rows/s, one core)")


if __name__ == "__main__":
    main()
