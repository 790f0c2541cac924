"""Ingest: read sources, probe, sample and decode frames, encode them with CLIP, and build the rows a run commits."""
