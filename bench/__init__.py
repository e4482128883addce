"""The load benchmark behind ``scripts/bench``: run it with ``python -m bench``.

It prepares data straight into a fresh database with the service's own models and secret box,
starts ``mfa serve`` as an operator would, loads it with wrk, and reports each figure against
the targets of issue 7.
"""
