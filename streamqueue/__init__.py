"""Jobs on Redis Streams, the far side of podworker's Redis job API: the layout and the client.

A team's API server imports :class:`streamqueue.client.JobQueue` to submit jobs, follow them and
cancel them; podworker's worker (``adapters/redis``) reads the same layout. Nothing here imports
podworker's worker, so this package installs on its own with ``redis``.

    layout.py    key names, fields, statuses, the id rule (both sides)
    scripts.py   every change of a job's state, as Lua run atomically by Redis (both sides)
    client.py    JobQueue: submit, status, wait, stream, progress, cancel, health
    records.py   what it answers (JobState, Chunk, Submitted) and its errors
    cli.py       ``python -m app queue ...`` / ``python -m streamqueue ...``
"""
