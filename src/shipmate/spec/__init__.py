"""The shipmate.yaml format: models, loading with located errors, JSON Schema export."""
