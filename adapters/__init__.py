"""Implementations of the domain's ports: real ones (RunPod, S3, diffusers) and local fakes."""
