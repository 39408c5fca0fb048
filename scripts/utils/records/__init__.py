"""The records: the hash registry and run manifest, data roots, the run recorder, and
reports read back."""
