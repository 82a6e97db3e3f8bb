"""Drills: prove rollback, restore, rotation and "no plaintext secret anywhere" on a real environment."""
