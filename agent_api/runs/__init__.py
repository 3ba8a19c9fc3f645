"""Runs: one turn of one team on one session, executed by workers and followed by any API process."""
