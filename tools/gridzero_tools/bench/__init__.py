"""Closed-loop benchmark of controllers against the plant model."""
