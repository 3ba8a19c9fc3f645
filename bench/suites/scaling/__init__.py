"""``bench/scaling.py``: the five scenarios on *before* and *now* (:mod:`.measure`), their report (:mod:`.report`)."""
