"""`medft train` (or `medft cv`, named first) under FSDP on the CPU, for the tests: launched
by `accelerate launch` with an FSDP config that has `use_cpu: true` (gloo).

accelerate runs FSDP on GPUs only: on the CPU its state falls back to plain data parallel
(`MULTI_CPU`) and drops the FSDP plugin, although torch's `fully_shard` shards over gloo
as it does over NCCL. This script puts FSDP back (the distributed type and the plugin, as
accelerate sets them on a GPU) and then runs medft unchanged, so the tests shard for real.
"""

import sys

from accelerate.state import AcceleratorState, PartialState
from accelerate.utils import DistributedType

from medft.cli import main

accelerator_state = AcceleratorState.__init__


def with_fsdp_on_the_cpu(self, *args, fsdp_plugin=None, **kwargs):
    accelerator_state(self, *args, fsdp_plugin=fsdp_plugin, **kwargs)
    if fsdp_plugin is not None and self.distributed_type == DistributedType.MULTI_CPU:
        self.distributed_type = DistributedType.FSDP
        PartialState._shared_state["distributed_type"] = DistributedType.FSDP  # read back later
        self.fsdp_plugin = fsdp_plugin


if __name__ == "__main__":
    AcceleratorState.__init__ = with_fsdp_on_the_cpu
    arguments = sys.argv[1:]
    sys.exit(main(arguments if arguments[0] == "cv" else ["train", *arguments]))
