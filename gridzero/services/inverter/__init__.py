"""gridzero."""
