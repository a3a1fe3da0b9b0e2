"""Snapshots -> long-layout rows for the ClickHouse health, performance and drift tables.

One row per (metric, window); undefined (None) figures produce no row, since the tables' value
column is not nullable. The tables deduplicate on (model, version, route, metric[, feature],
window), so anything that distinguishes rows, such as a reliability bin, is in the metric name;
`labels` carries only details.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

import numpy as np

from safeloop.schemas.tables import MetricRow
from safeloop.services.metrics.calibration import ReliabilityBins
from safeloop.services.metrics.drift import SCORE_NAME, DriftMetrics, ModelDrift
from safeloop.services.metrics.estimation import EstimateComparison, PerformanceEstimate
from safeloop.services.metrics.health import HealthSnapshot
from safeloop.services.metrics.keyed import WindowKey
from safeloop.services.metrics.multiclass import MulticlassMetrics
from safeloop.services.metrics.multiclass_estimation import AccuracyEstimate
from safeloop.services.metrics.performance import PerformanceSnapshot
from safeloop.services.metrics.residuals import ResidualDrift
from safeloop.services.metrics.shadow import ShadowComparison

Figure = tuple[str, float | int | None, int]


@dataclass(frozen=True, slots=True)
class RowContext:
    """What every row of one snapshot shares: whose window, which window, which details."""

    key: WindowKey
    window_start_ms: int
    window_end_ms: int
    labels: Mapping[str, str] = field(default_factory=dict)

    def rows(self, figures: Iterable[Figure], feature: str = "") -> list[MetricRow]:
        return [
            MetricRow(
                self.key.model_name,
                self.key.model_version,
                self.key.route.value,
                self.window_start_ms,
                self.window_end_ms,
                metric,
                float(value),
                sample_count,
                self.labels,
                feature,
            )
            for metric, value, sample_count in figures
            if value is not None
        ]


def health_rows(context: RowContext, snapshot: HealthSnapshot) -> list[MetricRow]:
    """Volume, error rate and latency percentiles of one health window."""
    n = snapshot.request_count
    return context.rows(
        [
            ("request_count", n, n),
            ("error_count", snapshot.error_count, n),
            ("error_rate", snapshot.error_rate, n),
            ("client_error_rate", snapshot.client_error_rate, n),
            ("latency_p50_ms", snapshot.latency_p50_ms, n),
            ("latency_p95_ms", snapshot.latency_p95_ms, n),
            ("latency_p99_ms", snapshot.latency_p99_ms, n),
            ("requests_per_s", snapshot.requests_per_s, n),
        ]
    )


def performance_rows(context: RowContext, snapshot: PerformanceSnapshot) -> list[MetricRow]:
    """Coverage, label delay, and the task's metrics (with reliability bins) of one window."""
    labelled = snapshot.labelled_count
    figures: list[Figure] = [
        ("predicted_count", snapshot.predicted_count, snapshot.predicted_count),
        ("labelled_count", labelled, labelled),
        ("label_coverage", snapshot.label_coverage, snapshot.predicted_count),
        ("label_delay_p50_ms", snapshot.label_delay_p50_ms, labelled),
        ("label_delay_p95_ms", snapshot.label_delay_p95_ms, labelled),
        ("label_delay_p99_ms", snapshot.label_delay_p99_ms, labelled),
    ]
    classification = snapshot.classification
    if classification is not None:
        n = classification.count
        figures += [
            ("accuracy", classification.accuracy, n),
            ("precision", classification.precision, n),
            ("recall", classification.recall, n),
            ("f1", classification.f1, n),
            ("roc_auc", classification.roc_auc, n),
            ("log_loss", classification.log_loss, n),
            ("brier_score", classification.brier_score, n),
            ("expected_calibration_error", classification.expected_calibration_error, n),
        ]
        figures += _reliability_figures(classification.reliability)
    regression = snapshot.regression
    if regression is not None:
        n = regression.count
        figures += [
            ("mae", regression.mae, n),
            ("rmse", regression.rmse, n),
            ("r2", regression.r2, n),
        ]
    if snapshot.multiclass is not None:
        figures += multiclass_figures(snapshot.multiclass)
    if snapshot.residuals is not None:
        figures += residual_figures(snapshot.residuals)
    return context.rows(figures)


def multiclass_figures(metrics: MulticlassMetrics) -> list[Figure]:
    """Averages, per-class figures (`<metric>_class_KK`), the non-zero confusion cells
    (`confusion_TT_PP`: true class TT predicted as PP) and top-label reliability bins."""
    n = metrics.count
    figures: list[Figure] = [
        ("accuracy", metrics.accuracy, n),
        ("macro_precision", metrics.macro_precision, n),
        ("macro_recall", metrics.macro_recall, n),
        ("macro_f1", metrics.macro_f1, n),
        ("micro_f1", metrics.micro_f1, n),
        ("weighted_f1", metrics.weighted_f1, n),
        ("log_loss", metrics.log_loss, n),
        ("brier_score", metrics.brier_score, n),
        ("expected_calibration_error", metrics.expected_calibration_error, n),
        ("class_count", metrics.n_classes, n),
    ]
    for k, support in enumerate(metrics.support):
        figures += [
            (f"support_class_{k:02d}", support, n),
            (f"precision_class_{k:02d}", metrics.precision_per_class[k], n),
            (f"recall_class_{k:02d}", metrics.recall_per_class[k], support),
            (f"f1_class_{k:02d}", metrics.f1_per_class[k], n),
        ]
    truth, predicted = np.nonzero(metrics.confusion)
    for i, j in zip(truth.tolist(), predicted.tolist(), strict=True):
        figures.append((f"confusion_{i:02d}_{j:02d}", int(metrics.confusion[i, j]), n))
    if metrics.reliability is not None:
        figures += _reliability_figures(metrics.reliability)
    return figures


def residual_figures(residuals: ResidualDrift) -> list[Figure]:
    """Residual mean (bias) and spread, and their drift from the training residuals."""
    n = residuals.count
    figures: list[Figure] = [
        ("residual_mean", residuals.mean, n),
        ("residual_std", residuals.std, n),
    ]
    if residuals.baseline_mean is not None and residuals.mean is not None:
        figures.append(("residual_bias_shift", residuals.mean - residuals.baseline_mean, n))
    drift = residuals.drift
    if drift is not None:
        figures += [
            ("residual_psi", drift.psi, drift.sample_count),
            ("residual_ks", drift.ks, drift.sample_count),
            ("residual_js_divergence", drift.js_divergence, drift.sample_count),
            ("residual_wasserstein", drift.wasserstein, drift.sample_count),
        ]
    return figures


def _reliability_figures(bins: ReliabilityBins) -> list[Figure]:
    figures: list[Figure] = []
    for index, count in enumerate(bins.counts.tolist()):
        if count:
            name = f"reliability_bin_{index:02d}"
            figures += [
                (f"{name}_count", count, count),
                (f"{name}_mean_predicted", float(bins.mean_predicted[index]), count),
                (f"{name}_observed_rate", float(bins.observed_rate[index]), count),
            ]
    return figures


def estimate_rows(
    context: RowContext,
    estimate: PerformanceEstimate,
    comparison: EstimateComparison | None = None,
) -> list[MetricRow]:
    """CBPE figures, stored beside the measured ones; with `comparison`, the estimate's error."""
    n = estimate.count
    figures: list[Figure] = [
        ("cbpe_expected_accuracy", estimate.expected_accuracy, n),
        ("cbpe_accuracy_std", estimate.accuracy_std, n),
        ("cbpe_expected_precision", estimate.expected_precision, n),
        ("cbpe_expected_recall", estimate.expected_recall, n),
        ("cbpe_expected_f1", estimate.expected_f1, n),
    ]
    if comparison is not None:
        figures += [
            ("cbpe_accuracy_error", comparison.accuracy_error, n),
            ("cbpe_accuracy_z", comparison.accuracy_z, n),
            ("cbpe_f1_error", comparison.f1_error, n),
        ]
    return context.rows(figures)


def accuracy_estimate_rows(
    context: RowContext, estimate: AccuracyEstimate, measured_accuracy: float | None
) -> list[MetricRow]:
    """A multi-class window's expected accuracy beside what its labels showed (`cbpe_labelled_*`,
    as for binary windows)."""
    n = estimate.count
    error = (
        None
        if estimate.expected_accuracy is None or measured_accuracy is None
        else estimate.expected_accuracy - measured_accuracy
    )
    z = None if error is None or not estimate.accuracy_std else error / estimate.accuracy_std
    return context.rows(
        [
            ("cbpe_labelled_expected_accuracy", estimate.expected_accuracy, n),
            ("cbpe_labelled_accuracy_std", estimate.accuracy_std, n),
            ("cbpe_labelled_accuracy_error", error, n),
            ("cbpe_labelled_accuracy_z", z, n),
        ]
    )


def shadow_rows(context: RowContext, comparison: ShadowComparison) -> list[MetricRow]:
    """Shadow-versus-production figures, keyed by the shadow's version and route."""
    n = comparison.pair_count
    labelled = comparison.labelled_count
    return context.rows(
        [
            ("shadow_pair_count", n, n),
            ("shadow_agreement_rate", comparison.agreement_rate, n),
            ("shadow_mean_difference", comparison.mean_difference, n),
            ("shadow_abs_difference_p50", comparison.abs_difference_p50, n),
            ("shadow_abs_difference_p95", comparison.abs_difference_p95, n),
            ("shadow_abs_difference_p99", comparison.abs_difference_p99, n),
            ("shadow_abs_difference_max", comparison.abs_difference_max, n),
            ("shadow_production_performance", comparison.production_performance, labelled),
            ("shadow_performance", comparison.shadow_performance, labelled),
        ]
    )


def drift_rows(context: RowContext, drift: ModelDrift) -> list[MetricRow]:
    """Per feature (and '' for the score): PSI with its band, KS, JS, Wasserstein, missing share."""
    rows: list[MetricRow] = []
    judged: list[tuple[str, DriftMetrics]] = list(drift.features.items())
    if drift.score is not None:
        judged.append((SCORE_NAME, drift.score))
    for name, metrics in judged:
        feature = "" if name == SCORE_NAME else name
        n = metrics.sample_count
        labels = dict(context.labels)
        if metrics.band is not None:
            labels["band"] = metrics.band.value
        banded = RowContext(context.key, context.window_start_ms, context.window_end_ms, labels)
        rows += banded.rows(
            [
                ("psi", metrics.psi, n),
                ("ks", metrics.ks, n),
                ("js_divergence", metrics.js_divergence, n),
                ("wasserstein", metrics.wasserstein, n),
                ("missing_fraction", metrics.missing_fraction, n),
            ],
            feature,
        )
    return rows
