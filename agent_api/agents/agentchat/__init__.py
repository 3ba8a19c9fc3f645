"""The AgentChat engine: teams run by AutoGen AgentChat (``autogen-agentchat`` 0.7), natively async.

``compat`` is the one module that touches AgentChat; ``components`` reads component files
safely; ``team`` builds and runs a team for one turn.
"""
