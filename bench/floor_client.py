"""The floor: a bare client that only takes jobs and posts their results, nothing else.

One keep-alive ``http.client`` connection with ``TCP_NODELAY``; each request is written in one
``send`` (headers and body together). No JSON parsing beyond reading the job id, no logging, no
threads. It is what the machine and the fake job API allow, the limit no worker can beat.

``python bench/floor_client.py TAKE_URL RESULT_URL COUNT [--key KEY] [--seconds S]``: the URLs
are the fake's templates (``$ID``, ``$RUNPOD_POD_ID``); exits 0 once ``COUNT`` results were
posted, 1 when ``S`` seconds (default 60) passed first.
"""

from __future__ import annotations

import argparse
import http.client
import json
import socket
import sys
import time
from urllib.parse import urlsplit

WORKER_ID = "floor-client"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("take_url")
    parser.add_argument("result_url")
    parser.add_argument("count", type=int)
    parser.add_argument("--key", default="")
    parser.add_argument("--seconds", type=float, default=60.0)
    args = parser.parse_args(argv)

    take = urlsplit(args.take_url.replace("$ID", WORKER_ID))
    take_target = f"{take.path}?{take.query}&job_in_progress=0"
    done = urlsplit(args.result_url.replace("$RUNPOD_POD_ID", WORKER_ID))
    done_path, done_query = done.path, f"?{done.query}&isStream=false"
    host, port = take.hostname or "127.0.0.1", take.port or 80
    head = {"Authorization": args.key} if args.key else {}

    conn = http.client.HTTPConnection(host, port, timeout=30)
    conn.connect()
    assert conn.sock is not None
    conn.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    posted = 0
    deadline = time.monotonic() + args.seconds
    for _ in range(args.count * 4 + 100):  # bounded: empty takes are allowed, not endless
        if posted >= args.count or time.monotonic() > deadline:
            break
        conn.request("GET", take_target, headers=head)
        response = conn.getresponse()
        data = response.read()
        if response.status != 200 or not data:
            continue
        job = json.loads(data)
        body = json.dumps({"output": job.get("input")}, separators=(",", ":")).encode()
        path = done_path.replace("$ID", str(job["id"])) + done_query
        conn.request("POST", path, body=body, headers={**head, "Content-Type": "application/json"})
        answer = conn.getresponse()
        answer.read()
        if 200 <= answer.status < 300:
            posted += 1
    conn.close()
    return 0 if posted >= args.count else 1


if __name__ == "__main__":
    sys.exit(main())
