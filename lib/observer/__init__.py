"""Stock Trading Observer: a self-healing market-data recorder for Korean brokers."""

__version__ = "0.1.0"
