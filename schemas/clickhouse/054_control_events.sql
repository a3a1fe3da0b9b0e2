-- Every control command and decision with its reason, the serving state it set, and the canary
-- share in percent for charts. control_log is small (one row per command), so FINAL is cheap.
CREATE OR REPLACE VIEW control_events AS
SELECT
    issued_at,
    model_name,
    entry_type,
    kind,
    sequence,
    issuer,
    reason,
    production_version,
    canary_version,
    canary_basis_points,
    canary_basis_points / 100.0                     AS canary_percent,
    canary_enabled,
    shadow_version,
    shadow_enabled,
    kill_switch,
    details,
    command_id
FROM control_log FINAL;
