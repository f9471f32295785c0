"""The fault matrix over the running system: ``python -m gridzero_tools.faults`` / ``gridzero faults``.

- ``rig.py``: the system (`gridzero up`) on a simulated plant that outlives it;
- ``scenarios.py``: the faults, how each is injected, measured and ended;
- ``report.py``: the table in docs/reliability.md;
- ``cli.py``: the command.
- ``admin.py``: a random admin (settings, buttons, faults) judged on the truth (issue 16).
"""
