"""Where and how the work runs: the environment fingerprint, exact arithmetic, Dask
scale-out."""
