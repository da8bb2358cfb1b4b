"""What one trial reserves on the cluster (the space's resources section), whether any node can hold it, and
TensorFlow confined to it in the trial's process."""

from __future__ import annotations

import subprocess

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
        have = ", ".join(
            f"{n['Resources'].get('CPU', 0):g} CPU/{n['Resources'].get('GPU', 0):g} GPU/"
            f"{n['Resources'].get('memory', 0) / 2**30:.1f} GiB"
            for n in nodes
        )
        asked = f"{need['CPU']:g} CPU, {need['GPU']:g} GPU" + (
            f", {space.resources.memory_gb:g} GiB" if "memory" in need else ""
        )
        raise UserError(
            f"resources: a trial asks for {asked} but no node has that (nodes: {have}); lower "
            f"resources.cpu/gpu/memory_gb in the space"
        )


def configure_tensorflow(cpus: float, gpu_fraction: float) -> None:
    """Confine TensorFlow to the trial's share: its CPUs as threads, its fraction of GPU memory."""
    import tensorflow as tf

    threads = max(1, int(cpus))
    try:
        tf.config.threading.set_intra_op_parallelism_threads(threads)
        tf.config.threading.set_inter_op_parallelism_threads(min(2, threads))
    except RuntimeError:
        pass  # TensorFlow already initialised in this process (e.g. a reused worker): keep its settings
    gpus = tf.config.list_physical_devices("GPU")
    for gpu in gpus:
        limit = _gpu_memory_limit_mb(gpu_fraction)
        try:
            if limit:
                # a hard cap: fractional trials sharing a GPU cannot starve each other
                tf.config.set_logical_device_configuration(
                    gpu, [tf.config.LogicalDeviceConfiguration(memory_limit=limit)]
                )
            else:
                tf.config.experimental.set_memory_growth(gpu, True)
        except RuntimeError:
            pass


def _gpu_memory_limit_mb(fraction: float) -> int | None:
    """The trial's share of its GPU's memory in MiB (None for a whole GPU or when it cannot be read)."""
    if not 0 < fraction < 1:
        return None
    try:
        import ray

        ids = ray.get_gpu_ids()
        index = str(ids[0]) if ids else "0"
        total = subprocess.run(
            ["nvidia-smi", "--query-gpu=memory.total", "--format=csv,noheader,nounits", "-i", index],
            capture_output=True,
            text=True,
            timeout=20,
            check=True,
        ).stdout.strip()
        # leave a margin for the CUDA context, which is not counted in the logical device's limit
        return int(float(total.splitlines()[0]) * fraction * 0.9)
    except (OSError, ValueError, IndexError, subprocess.SubprocessError):  # no nvidia-smi, or not its answer
        return None
