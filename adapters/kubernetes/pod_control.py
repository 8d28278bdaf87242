"""The end of an idle worker's life on Kubernetes: exit 0, delete nothing.

Exists because a worker run by a KEDA ``ScaledJob`` is a Job's pod: when it has been idle for
``TERMINATE_IDLE_TIME`` it should simply exit 0, which completes its Job (the pod stops and is
cleaned up by the Job's TTL), and KEDA starts new Jobs while the queue has work. No API call,
no credentials: ``terminate`` only says so in the log and never raises, so the process exits
with code 0 (RunPod's pod control would delete the pod through RunPod's API instead).
"""

from __future__ import annotations

import logging

log = logging.getLogger(__name__)


class JobCompletesPodControl:
    """``terminate`` records the request (``terminated``) and leaves the exit to the worker."""

    def __init__(self, pod_id: str) -> None:
        self.pod_id = pod_id
        self.terminated = 0

    def terminate(self) -> None:
        self.terminated += 1
        log.info("idle: exiting 0 so this pod's Job completes (nothing is deleted)",
                 extra={"event": "idle_exit", "pod_id": self.pod_id})
