"""The dashboard's SQL for multi-class and regression models: the newest window's per-class
figures, confusion cells and error summaries (rows written by services.metrics.rows)."""

from __future__ import annotations

from typing import Final

from safeloop.services.dashboard.queries import Query, Scope, bind

# Model-level figures of multi-class and regression windows, beside the per-class ones.
TASK_FIGURES: Final = (
    "class_count",
    "accuracy",
    "macro_precision",
    "macro_recall",
    "macro_f1",
    "micro_f1",
    "weighted_f1",
    "log_loss",
    "brier_score",
    "expected_calibration_error",
    "labelled_count",
    "mae",
    "rmse",
    "r2",
    "residual_mean",
    "residual_std",
    "residual_bias_shift",
    "residual_psi",
    "residual_ks",
)
# Charted over time (from /api/series) on the multi-class and regression panels.
TASK_SERIES: Final = (
    "macro_f1",
    "micro_f1",
    "log_loss",
    "mae",
    "rmse",
    "r2",
    "residual_psi",
    "residual_mean",
)


def task_figures(scope: Scope) -> Query:
    """Every figure of each (version, route)'s newest time window in the range that has
    multi-class (`class_count`) or regression (`mae`) figures.

    Time-window rows only (count-window rows end in `_last_n`); one window per series, so the
    confusion cells and per-class figures all come from the same snapshot.
    """
    return bind(
        "task_figures",
        """
        SELECT model_version, route, metric, value, sample_count, window_end
        FROM window_metrics
        WHERE model_name = {model:String} AND source = 'performance'
          AND window_start >= {since:DateTime('UTC')} AND window_start <= {until:DateTime('UTC')}
          AND (model_version, route, window_end) IN
          (
              SELECT model_version, route, max(window_end)
              FROM window_metrics
              WHERE model_name = {model:String} AND source = 'performance'
                AND metric IN ('class_count', 'mae')
                AND window_start >= {since:DateTime('UTC')}
                AND window_start <= {until:DateTime('UTC')}
              GROUP BY model_version, route
          )
          AND NOT endsWith(metric, '_last_n')
          AND (
              metric IN {figures:Array(String)}
              OR startsWith(metric, 'confusion_')
              OR match(metric, '^(precision|recall|f1|support)_class_[0-9]+$')
          )
        ORDER BY model_version, route, metric
        LIMIT 20000
        """,
        {**scope.parameters(), "figures": list(TASK_FIGURES)},
    )
