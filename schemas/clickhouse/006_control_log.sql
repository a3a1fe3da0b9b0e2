-- Every control command and control-plane decision (operator, rollback guard, canary
-- stepper), with its reason and details: the audit trail of who changed serving and why.
-- entry_type says what produced the row (e.g. 'command', 'decision', 'refusal'). The config
-- is flattened so dashboards can chart canary percentages and versions directly.
CREATE TABLE IF NOT EXISTS control_log
(
    entry_type          LowCardinality(String),
    command_id          String,
    model_name          LowCardinality(String),
    kind                LowCardinality(String),
    sequence            Int64,
    issued_at           DateTime64(3, 'UTC'),
    issuer              LowCardinality(String),
    reason              String,
    production_version  LowCardinality(String),
    canary_version      LowCardinality(Nullable(String)),
    canary_basis_points Int32,
    canary_enabled      Bool,
    shadow_version      LowCardinality(Nullable(String)),
    shadow_enabled      Bool,
    kill_switch         Bool,
    fallback_version    LowCardinality(Nullable(String)),
    flags               Map(String, String),
    key_id              LowCardinality(String),
    signature           String,
    details             Map(String, String),
    logged_at           DateTime64(3, 'UTC') DEFAULT now64(3, 'UTC')
)
ENGINE = ReplacingMergeTree
PARTITION BY toYYYYMM(issued_at)
ORDER BY (model_name, issued_at, sequence, entry_type, command_id)
SETTINGS non_replicated_deduplication_window = 1000;
