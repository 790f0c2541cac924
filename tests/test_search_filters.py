"""Search filters: typed literals, never the user's text pasted into SQL."""

import pytest

from schemas.tables import INDEX_FILTER_COLUMNS, video_index_spec
from workers.search.filters import Filter, FilterError, filters_sql, parse_filter


def test_filter_sql_never_embeds_raw_text():
    schema = video_index_spec("0" * 64, "m", 2, 8, segments=2, slots=3).schema(4)
    sql = filters_sql([Filter("split", "=", "x' OR 1=1 --")], schema, INDEX_FILTER_COLUMNS)
    assert sql == "split = 'x'' OR 1=1 --'"
    assert filters_sql([parse_filter("ingested_at >= 2026-01-02")], schema, INDEX_FILTER_COLUMNS) == (
        "ingested_at >= TIMESTAMP '2026-01-02 00:00:00.000000'"
    )
    assert parse_filter("dataset in a, b") == Filter("dataset", "in", ["a", "b"])
    with pytest.raises(FilterError, match="cannot read filter"):
        parse_filter("split")


def test_a_time_moved_out_of_range_by_its_zone_is_a_filter_error():
    schema = video_index_spec("0" * 64, "m", 2, 8, segments=2, slots=3).schema(4)
    with pytest.raises(FilterError, match="needs an ISO date or time"):
        filters_sql([Filter("ingested_at", ">", "0001-01-01T00:00:00+01:00")], schema, INDEX_FILTER_COLUMNS)
