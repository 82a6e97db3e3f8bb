"""Observability of shipmate itself: structured logs (metrics and traces come with the server)."""
