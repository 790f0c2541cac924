"""The scoring head's cost on this machine: workloads and FLOP model (`workloads`), and their timing (`timing`)."""
