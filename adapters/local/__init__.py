"""Adapters that talk to no outside system: the local run's and the tests' real fakes
(in-memory job API and outbox, recording pod control, echo model, test inputs), and the
storages that keep outputs on disk or inside the result."""
