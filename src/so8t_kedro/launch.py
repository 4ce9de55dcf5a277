"""Which process this is under ``accelerate launch``: read by the run hooks and the
tracking hooks, so it lives below both."""

from __future__ import annotations


def launch_rank() -> int:
    """This process's rank under ``accelerate launch`` (0 in a plain run).

    accelerate's own reading of the launchers' variables (torchrun's ``RANK``, MPI's
    ``PMI_RANK`` ...), usable before any process group exists; despite its name it serves
    GPU launches too.
    """
    from accelerate.utils.environment import get_cpu_distributed_information

    return get_cpu_distributed_information().rank
