"""Settings shared by the fault tests: small retries so the tier stays fast.

3 attempts per request, a 2 s read timeout, and ``delay`` faults that hold a request for
5 s (longer than the timeout, so the client times out and retries).
"""

from __future__ import annotations

MAX_ATTEMPTS = 3
READ_TIMEOUT_S = 2.0
DELAY_S = 5.0
