"""Kubernetes: what a worker run as a Job's pod does at the end of its life."""
