"""The AutoGen layer: LLM configuration, team builders, the registry and the runner.

Nothing here knows about HTTP.
"""
