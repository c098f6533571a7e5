"""Reference implementations the fast paths are checked against (test oracles, not shipped)."""
