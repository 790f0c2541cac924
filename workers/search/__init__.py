"""The query path: the searcher (ANN candidates, exact GLSCL re-rank), the indexes of a video index table, metadata
filters, the packed encodings the re-rank reads, and the ANN projection."""
