"""Reducers map [N, D] vectors to [N, dim] (the contract is in `base.py`): the cosine encoder, the
autoencoder it departs from, and the closed-form baselines. Each is one option of the `encoder` config group."""
