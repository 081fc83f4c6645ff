"""Developer tooling: the local stack behind `make run`."""
