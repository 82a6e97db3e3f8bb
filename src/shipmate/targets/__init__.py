"""Targets: where a release's workloads run. `local` (supervised processes on this machine) and,
later, `kubernetes`. Both sit behind the Target protocol; targets carry out what the engine asks
and never decide strategy."""
