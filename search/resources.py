"""What one trial reserves on the cluster (the space's resources section) and whether any node can hold it."""

from __future__ import annotations

from auttention.errors import UserError

from .space import Space


def trial_resources(space: Space) -> dict[str, float]:
    """What Ray reserves for one trial (memory in bytes, as Ray counts it)."""
    need = {"CPU": space.resources.cpu, "GPU": space.resources.gpu}
    if space.resources.memory_gb:
        need["memory"] = float(int(space.resources.memory_gb * 2**30))
    return need


def check_resources(space: Space) -> None:
    """Fail fast when no node of the cluster can ever hold one trial (Tune would wait forever)."""
    import ray

    need = trial_resources(space)
    nodes = [n for n in ray.nodes() if n.get("Alive")]
    if not any(all(n["Resources"].get(k, 0) >= v for k, v in need.items() if v) for n in nodes):
        have = ", ".join(f"{n['Resources'].get('CPU', 0):g} CPU/{n['Resources'].get('GPU', 0):g} GPU/"
                         f"{n['Resources'].get('memory', 0) / 2**30:.1f} GiB" for n in nodes)
        asked = f"{need['CPU']:g} CPU, {need['GPU']:g} GPU" + (
            f", {space.resources.memory_gb:g} GiB" if "memory" in need else "")
        raise UserError(f"resources: a trial asks for {asked} but no node has that (nodes: {have}); lower "
                        f"resources.cpu/gpu/memory_gb in the space")
