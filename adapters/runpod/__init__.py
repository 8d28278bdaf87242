"""RunPod: the job API over HTTP, pod control over GraphQL, and the wire rules both share."""
