"""Evaluation: the shard scorer of a checkpoint over a split's stored features."""
