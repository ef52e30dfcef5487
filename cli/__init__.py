"""The `replayft` command: the one place that wires the engine, client, API and worker commands
together (so api/ and worker/ never need to import each other)."""
