"""A local stand-in for RunPod's platform: the far side of the protocol podworker speaks.

The worker's job API (take, take-batch, done, stream, ping, job-stop), the pod-control GraphQL
``podTerminate``, and the client API that ``runpod.Endpoint`` calls (run, runsync, status,
stream, cancel, retry, health, purge-queue), over real HTTP on loopback, with fault injection.
It imports nothing of podworker, so the same server checks podworker and RunPod's own SDK.

    state.py          the queue, jobs, results, progress, streams (one condition)
    worker_routes.py  the worker's side;  client_routes.py  the client's side
    faults.py         fault injection;    wire.py  the fast HTTP/1.1 server
    server.py         FakeJobApiServer: routing, credentials, life, URLs
    cli.py            ``python -m app fake-api`` / ``python -m fakeplatform``
"""

from fakeplatform.server import ENDPOINT_ID, FakeJobApiServer
from fakeplatform.state import FakeJob
from fakeplatform.wire import Reply

__all__ = ["ENDPOINT_ID", "FakeJob", "FakeJobApiServer", "Reply"]
