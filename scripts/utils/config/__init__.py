"""Configs and seeds: loading TOML/JSON/YAML, the config shapes (JSON Schema), seeds."""
