"""Progressive canary: a pure state machine whose transitions come back as intents."""
