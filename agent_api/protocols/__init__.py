"""Encoders from runs to each protocol's objects and frames: pure, no HTTP."""
