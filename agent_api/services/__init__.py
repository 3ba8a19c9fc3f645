"""Stateful services: the session store and what comes after it."""
