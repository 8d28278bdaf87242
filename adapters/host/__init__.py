"""The machine the worker runs on: its process's memory (host RAM and accelerator memory) and
the record of failed starts kept under ``STATE_DIR``."""
