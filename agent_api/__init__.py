"""agent-api: AutoGen multi-agent teams behind a production HTTP API."""

__version__ = "0.1.0"
