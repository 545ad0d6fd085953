"""When a sweep's winner takes the `@winner` alias of its registered model: `select.register` says whether
it always does, never does, or does when it is at least as good as the model holding it (`auto`)."""

from simreduce.runtime.errors import SimreduceError

REGISTER_POLICIES = ("auto", "always", "never")


def check_register(policy: str) -> None:
    """Refuse a `select.register` that is none of REGISTER_POLICIES, the one list `simreduce select` offers too."""
    if policy not in REGISTER_POLICIES:
        raise SimreduceError(f"select.register={policy!r} is not one of {REGISTER_POLICIES}.")


def alias_decision(
    policy: str, holder: dict[str, str] | None, winner: dict[str, str], tolerance: float, target_met: bool | None = None
) -> tuple[bool, str]:
    """Whether the `winner` alias moves to this sweep's winner (tags `data_id`, `score`) from `holder` (the
    tags and `version` of the version holding it, None when none does), and why, in a few words.

    `auto` keeps a model nobody asked to replace, and never moves the alias across data: `a/same.npy` and
    `b/same.npy` share a model name, and a `compress ... @winner` loop on a's vectors would switch to b's model
    between two calls. With a target (`target_met` not None) the alias moves only when the winner reaches it.
    Without one, it moves to one of the same data whose score is within `tolerance` of the holder's (the
    tolerance rule's own reading of "as good"); a throwaway sweep (`encoder.steps=0`, a tiny batch) scores worse
    and moves nothing.
    """
    check_register(policy)
    if policy != "auto":
        return policy == "always", f"select.register={policy}"
    if holder is not None and holder.get("data_id") != winner["data_id"]:
        return False, (
            f"version {holder['version']} reduces other data (data_id {holder.get('data_id')}, this winner's "
            f"{winner['data_id']}): select.register=always moves @winner across data"
        )
    if target_met is not None:
        return target_met, "it reaches the target" if target_met else "it misses the target"
    if holder is None:
        return True, "no version held it"
    version = holder["version"]
    held, new = float(holder.get("score", "nan")), float(winner["score"])
    if new <= held * (1 + tolerance):
        return True, f"its score {new:.4g} is within {tolerance:.0%} of version {version}'s {held:.4g}, same data"
    return False, (
        f"version {version} scores {held:.4g} on the same data, better than {new:.4g}; select.register=always moves it"
    )
