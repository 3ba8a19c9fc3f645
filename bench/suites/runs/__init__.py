"""``bench/runs.py``: the three measurements (:mod:`.measure`) and their report (:mod:`.report`)."""
