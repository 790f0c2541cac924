"""The index build: what `glscl index` writes beside a video index table for the query path to read."""
