"""cyber-werewolves: a small real-time werewolf game backend, the example application of shipmate.

Three processes, each started by `python3 -m` from `examples/cyber-werewolves/`:

- `werewolves.api` (api-server): the HTTP API; keeps every game in PostgreSQL, publishes each
  event to NATS after commit, answers bot moves over NATS, counts room members in Redis;
- `werewolves.gateway` (ws-gateway): WebSockets that push a room's events from NATS to players;
- `werewolves.agents` (agent-runtime): plays the bots by simple rules, over NATS only.

`werewolves.client` is a scripted player that plays one game end to end and checks what it saw.
The game rules are pure (`game.py`); the modules named for a system talk to it (`store.py` to
PostgreSQL, `clients.py` to NATS and Redis, `web.py` to HTTP peers).
"""
