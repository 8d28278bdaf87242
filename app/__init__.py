"""The composition root: settings, wiring, the worker process and the command line."""
