"""HTTP as podworker speaks it: one guarded client (overall deadlines, size caps), and the
safe fetcher for URLs a job names."""
