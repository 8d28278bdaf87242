"""Redis Streams: the job API of a queue that a team runs itself (Kubernetes + KEDA)."""
