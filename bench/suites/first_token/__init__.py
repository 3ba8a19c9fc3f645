"""``bench/first_token.py``: streams read frame by frame (:mod:`.streams`), their report (:mod:`.report`)."""
