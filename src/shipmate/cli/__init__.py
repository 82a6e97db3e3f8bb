"""The `shipmate` command: one module per command group, an application object for output."""
