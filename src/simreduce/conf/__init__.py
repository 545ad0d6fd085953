"""The Hydra config: a package, so that Hydra finds it as `pkg://simreduce.conf` inside a wheel."""
