"""The knobs of a bench run, in one place.

Short runs on purpose: the loads of both databases take about three minutes on a 2-core
machine, with the load generator on the same cores as the service. Preparing the users takes
longer (the whole bench nine to twelve minutes, 2026-11-28).
"""

from __future__ import annotations

# The service as users run it: `mfa serve --workers 2`.
WORKERS = 2

# Each wrk run.
DURATION_S = 8
WARMUP_S = 2
THREADS = 2
CONNECTIONS = 64
# Password logins spend ~all CPU in argon2id; fewer connections than that only add queueing.
LOGIN_CONNECTIONS = 32
# A request that takes longer than this counts as a timeout error, not as a latency.
WRK_TIMEOUT_S = 10

# The light /healthz probe that runs while logins saturate the service.
PROBE_CONNECTIONS = 4
PROBE_RATE = 200  # requests/s

# Verification at half its peak rate: paced by wrk's delay(), with enough connections that
# this much latency still leaves one free for each send slot (at most PACED_CONNECTIONS).
PACED_LATENCY_BUDGET_S = 0.1
PACED_CONNECTIONS = 64

# Prepared users. Each TOTP verification needs its own user and login transaction (a code is
# good once per time step); the peak run gets two thirds, the half-rate run the rest.
VERIFY_USERS = {"sqlite": 60_000, "postgresql": 45_000}
# Security-key logins are prepared through the service's own calls, 9 to 23 ms each on SQLite
# by the machine (2026-11-27 and 28); their run is shorter than the others so that these last
# it out (wrk runs for its whole duration, so a run that ran out early would report a rate below
# the real one). SQLite's 9,000 ran out on a machine that answered about 1,800 a second
# (2026-11-27).
WEBAUTHN_USERS = {"sqlite": 12_000, "postgresql": 4_000}
WEBAUTHN_DURATION_S = 5
ME_USERS = 256
PASSWORD_USERS = 2_000
INSERT_BATCH = 5_000

# The raw argon2id rate: this many processes verifying in a loop for this long, summed.
ARGON_PROCESSES = WORKERS
ARGON_SECONDS = 5.0

# Targets (issue 7).
ME_MIN_RATIO = 0.20
VERIFY_MIN_RATIO_SQLITE = 0.20
LOGIN_MIN_ARGON_RATIO = 0.90
HEALTHZ_P95_UNDER_LOGINS_MS = 20.0
VERIFY_HALF_PEAK_P99_MS = 10.0

PG_ADMIN_URL = "postgresql://postgres@127.0.0.1:5432/postgres"
