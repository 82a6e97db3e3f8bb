"""Control-plane state: what runs where, in SQLite under the state directory (SQLAlchemy), and the
lock that keeps two shipmate processes from changing it at once."""
