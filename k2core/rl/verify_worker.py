"""The math-verify worker process: reads `[gold, pred]` JSON lines on stdin, answers one JSON line each.

`k2core.rl.rewards` runs this file as a plain subprocess (so it works from threads, daemon processes
and scripts without a `__main__` guard; by path, so the heavy `k2core.rl` package is not imported)
and this worker calls math-verify with its signal-based timeouts disabled; the parent enforces the
timeout by killing it.
"""

from __future__ import annotations

import json
import logging
import sys


def main() -> None:
    from math_verify import parse, verify

    logging.getLogger("math_verify").setLevel(logging.ERROR)
    out = sys.stdout
    out.write(json.dumps({"ready": True}) + "\n")
    out.flush()
    for line in sys.stdin:
        try:
            gold, pred = json.loads(line)
            g = parse(f"${gold}$", parsing_timeout=None)
            p = parse(f"${pred}$", parsing_timeout=None)
            reply: dict[str, object] = {"ok": bool(g) and bool(p) and bool(verify(g, p, timeout_seconds=None))}
        except Exception as exc:  # noqa: BLE001 - reported back to the caller, which counts it
            reply = {"error": f"{type(exc).__name__}: {exc}"}
        out.write(json.dumps(reply) + "\n")
        out.flush()


if __name__ == "__main__":
    main()
