"""Dataset sources: each produces a manifest (one row per video) and a class-name table."""
