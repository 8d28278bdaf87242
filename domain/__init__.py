"""The pure core of podworker: jobs, results, errors, lifecycle policy and the ports.

Nothing here imports anything outside the standard library, and nothing here reads the
clock: time is always handed in as ``now`` (seconds on a monotonic clock).
"""
