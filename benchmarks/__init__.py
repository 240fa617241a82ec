"""Speed and memory measurements of the project's training steps (run as ``python -m benchmarks.<name>``)."""
