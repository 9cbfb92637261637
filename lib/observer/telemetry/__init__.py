"""What the programs tell the operator: alerts (outbox, Telegram transport, daily summary) and
Prometheus textfile metrics. A floor below the collectors, healers and lifecycle programs that use
them, above the store they write through."""
