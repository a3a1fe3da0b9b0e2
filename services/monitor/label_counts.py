"""Right answers per version from ClickHouse, for re-judging a provisional promotion."""

from __future__ import annotations

from clickhouse_connect.driver import Client
from clickhouse_connect.driver.exceptions import Error as ClickHouseError

from safeloop.infra.exceptions import WarehouseError

# Joined labels (FINAL: the newest version of each row) and late ones (the feedback_late view),
# counted by prediction time; a classifier's answer is right when both sides of 0.5 agree.
_COUNTS = """
SELECT model_version, route,
       countIf((prediction >= 0.5) = (ground_truth >= 0.5)) AS correct, count() AS labelled
FROM (
    SELECT model_version, route, prediction, ground_truth, prediction_timestamp
    FROM feedback FINAL
    WHERE status = 'joined' AND model_name = {model:String}
    UNION ALL
    SELECT model_version, route, prediction, ground_truth, prediction_timestamp
    FROM feedback_late
    WHERE model_name = {model:String}
)
WHERE prediction_timestamp >= fromUnixTimestamp64Milli({since:Int64})
  AND prediction IS NOT NULL AND ground_truth IS NOT NULL
  AND model_version IN ({known_good:String}, {candidate:String})
  AND route IN ('production', 'canary')
GROUP BY model_version, route
"""


class ClickHouseLabelCounts:
    """`LabelCounts` over the feedback tables of one ClickHouse database."""

    def __init__(self, client: Client) -> None:
        self._client = client

    def accuracy_counts(
        self, model_name: str, known_good: str, candidate: str, since_ms: int
    ) -> tuple[tuple[int, int], tuple[int, int]]:
        try:
            rows = self._client.query(
                _COUNTS,
                parameters={
                    "model": model_name,
                    "since": since_ms,
                    "known_good": known_good,
                    "candidate": candidate,
                },
            ).result_rows
        except ClickHouseError as exc:
            raise WarehouseError(f"label counts of {model_name} not read: {exc}") from exc
        good = [0, 0]
        new = [0, 0]
        for version, route, correct, labelled in rows:
            if version == candidate:
                new[0] += int(correct)
                new[1] += int(labelled)
            elif version == known_good and route == "production":
                good[0] += int(correct)
                good[1] += int(labelled)
        return (good[0], good[1]), (new[0], new[1])
