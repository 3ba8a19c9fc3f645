"""The AutoGen layer: teams and their registry, the engines that run them, LLM configuration, the runner.

Nothing here knows about HTTP. The team descriptions (``teams``, ``loader``, ``registry``,
``tools``) import no engine: AutoGen is loaded only by the processes that run agents.
"""
