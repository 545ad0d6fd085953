"""Everything that talks to MLflow, around an explicit `TrackingStore`: `store` (the store and its
experiments), `runs` (one job's run and what it logs), `sweeps` (sweep ids, resume, reading runs back, the
summary run) and `registry` (the winner's registration, loading a logged reducer). No other module imports
MLflow."""

from simreduce.experiment.tracking.store import TrackingStore

__all__ = ["TrackingStore"]
