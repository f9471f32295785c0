"""gridzero: keep a home's grid power at zero with a battery of VW GTE modules."""

__version__ = "0.1.0"
