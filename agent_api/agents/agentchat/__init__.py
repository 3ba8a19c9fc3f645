"""The AgentChat engine: teams run by AutoGen AgentChat (``autogen-agentchat`` 0.7), natively async.

``compat`` is the one module that touches AgentChat; ``components`` reads component files
safely; ``team`` describes a team (what API processes load), ``engine`` builds and runs it for
one turn (loaded only where runs execute).
"""
