"""Releases and rollouts.

The pure core lives here: `models` (Release, Rollout, Step, Decision and the rollout's transitions),
`steps` (strategies as step lists), `analysis` (checks and decisions from per-version counters),
`diff` (what changed between two releases, secrets masked) and `codec` (those values to JSON and
back). None of them does I/O; the engine that runs rollouts against a Target and a store sits
beside them and is the only part that does.
"""
