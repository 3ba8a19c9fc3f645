"""``bench/faults.py``: the fault scenarios, one module per family, and what they share.

- :mod:`.outcome`: a scenario's verdict (its checks) and running it within a time limit;
- :mod:`.attempts`: one ``/chat`` or ``/chat/stream`` request as the client saw it;
- :mod:`.history`: a session's stored history against what its client was answered;
- :mod:`.probes`: the API's lock keys, runs in flight and log, the model's view of a request;
- :mod:`.redis_restart`, :mod:`.model_faults`, :mod:`.disconnects`, :mod:`.worker_kill`: the scenarios;
- :mod:`.report`: the ``faults`` section of docs/benchmarks.md.
"""

SCENARIOS = ["redis-restart", "model-faults", "disconnects", "worker-kill"]
