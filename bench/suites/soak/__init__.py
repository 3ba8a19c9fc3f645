"""``bench/soak.py``: the traffic and its samples (:mod:`.traffic`), the verdict and report (:mod:`.report`)."""
