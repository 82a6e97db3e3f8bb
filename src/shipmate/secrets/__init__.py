"""Secrets: generating values now; the encrypted, versioned store and rotation build on it."""
