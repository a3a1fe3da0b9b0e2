-- Retraining decisions as emitted (re-emissions collapsed); small, so FINAL is cheap.
CREATE OR REPLACE VIEW retraining_events AS
SELECT
    timestamp,
    model_name,
    model_version,
    should_retrain,
    urgency,
    reason,
    max_psi,
    performance_drop,
    drifted_features,
    decision_id
FROM retraining_decisions FINAL;
