"""Sources: folders, manifests and ActivityNet annotation files, and fast, named errors for malformed ones."""

import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from workers.ingest.sources import SourceError, SourceOptions, read_source


def touch(path):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"x")
    return path


def test_folder_is_recursive_and_keeps_video_containers_only(tmp_path):
    for name in ["a.mp4", "sub/b.MKV", "sub/deeper/c.webm", "d.avi", "e.mov", "notes.txt", "f.jpg"]:
        touch(tmp_path / name)
    collection = read_source(tmp_path, SourceOptions())
    ids = sorted(v.source_id for v in collection.videos)
    assert ids == ["a", "d", "e", "sub/b", "sub/deeper/c"]
    assert {v.split for v in collection.videos} == {"all"}


def test_csv_manifest_with_captions_and_relative_paths(tmp_path):
    touch(tmp_path / "clips/one.mp4")
    touch(tmp_path / "clips/two.mp4")
    manifest = tmp_path / "list.csv"
    manifest.write_text(
        "path,id,split,caption\nclips/one.mp4,first,train,a dog runs\nclips/one.mp4,first,train,a dog plays\n"
        "clips/two.mp4,second,val,a cat sleeps\n"
    )
    collection = read_source(manifest, SourceOptions(dataset="pets"))
    assert [v.source_id for v in collection.videos] == ["first", "second"]
    first = collection.videos[0]
    assert first.path == str(tmp_path / "clips/one.mp4")
    assert [c.text for c in first.captions] == ["a dog runs", "a dog plays"]
    assert [v.split for v in collection.videos] == ["train", "val"]
    assert {v.dataset for v in collection.videos} == {"pets"}


def test_parquet_manifest_path_only(tmp_path):
    touch(tmp_path / "v.mp4")
    pq.write_table(pa.table({"path": [str(tmp_path / "v.mp4")]}), tmp_path / "m.parquet")
    collection = read_source(tmp_path / "m.parquet", SourceOptions(split="test"))
    assert [(v.source_id, v.split, v.captions) for v in collection.videos] == [("v", "test", [])]


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("file,id\nx.mp4,1\n", "needs a 'path' column (found: file, id)"),
        ("path,id\nx.mp4,1\n,2\n", "row 3 has an empty 'path'"),
    ],
)
def test_malformed_manifest_names_file_and_entry(tmp_path, content, message):
    manifest = tmp_path / "bad.csv"
    manifest.write_text(content)
    with pytest.raises(SourceError, match=r"bad\.csv") as error:
        read_source(manifest, SourceOptions())
    assert message in str(error.value)


def activitynet(tmp_path, annotations, name="val_1.json"):
    path = tmp_path / name
    path.write_text(json.dumps(annotations))
    return path


def test_activitynet_sentences_paragraph_and_missing_videos(tmp_path):
    touch(tmp_path / "videos/v_abc.mp4")
    touch(tmp_path / "videos/v_def.mkv")
    path = activitynet(
        tmp_path,
        {
            "v_abc": {
                "duration": 10.4,
                "timestamps": [[0, 4.5], [4.5, 10.4]],
                "sentences": [" A man runs.", " He falls."],
            },
            "def": {"duration": 3, "timestamps": [[0, 3]], "sentences": ["A cat."]},
            "v_gone": {"duration": 5, "timestamps": [[0, 5]], "sentences": ["Nothing."]},
        },
    )
    collection = read_source(path, SourceOptions(video_root=str(tmp_path / "videos")))
    assert collection.missing == ["v_gone"]
    first, second = collection.videos
    assert (first.source_id, first.split, first.dataset) == ("v_abc", "val_1", "activitynet")
    assert [(c.kind, c.order, c.text, c.start, c.end) for c in first.captions] == [
        ("sentence", 0, "A man runs.", 0.0, 4.5),
        ("sentence", 1, "He falls.", 4.5, 10.4),
        ("paragraph", -1, "A man runs. He falls.", 0.0, 11.0),
    ]
    assert second.path.endswith("v_def.mkv")


@pytest.mark.parametrize(
    ("entry", "message"),
    [
        ({"duration": 3, "timestamps": [[0, 3]]}, "entry 'v_x' lacks sentences"),
        ({"duration": -1, "timestamps": [[0, 3]], "sentences": ["a"]}, "entry 'v_x' has an invalid duration -1"),
        ({"duration": 3, "timestamps": [[0, 3]], "sentences": ["a", "b"]}, "2 sentences but timestamps"),
        ({"duration": 3, "timestamps": [[0]], "sentences": ["a"]}, "timestamp [0] is not a [start, end] pair"),
        ("oops", "entry 'v_x' is not an object"),
    ],
)
def test_malformed_annotation_names_file_and_entry(tmp_path, entry, message):
    (tmp_path / "videos").mkdir()
    path = activitynet(tmp_path, {"v_x": entry}, name="train.json")
    with pytest.raises(SourceError, match=r"train\.json") as error:
        read_source(path, SourceOptions(video_root=str(tmp_path / "videos")))
    assert message in str(error.value)


def test_annotation_needs_a_video_root_and_valid_json(tmp_path):
    path = activitynet(tmp_path, {})
    with pytest.raises(SourceError, match="needs --video-root"):
        read_source(path, SourceOptions())
    path.write_text("{not json")
    with pytest.raises(SourceError, match="not valid JSON"):
        read_source(path, SourceOptions(video_root=str(tmp_path)))


def test_unknown_source_kinds(tmp_path):
    with pytest.raises(SourceError, match="no such file or folder"):
        read_source(tmp_path / "absent", SourceOptions())
    with pytest.raises(SourceError, match="not a folder, a manifest"):
        read_source(touch(tmp_path / "x.txt"), SourceOptions())


ONE_VIDEO = {"a": {"duration": 2.0, "timestamps": [[0, 1]], "sentences": ["x"]}}


def test_paths_are_stored_absolute_whatever_the_source_was_given_as(tmp_path, monkeypatch):
    """The service and later runs find a video from any working folder: every source kind, named relatively,
    yields absolute paths (symbolic links kept, not resolved)."""
    touch(tmp_path / "videos" / "v_a.mp4")
    (tmp_path / "list.csv").write_text("path\nvideos/v_a.mp4\n")
    (tmp_path / "val_1.json").write_text(json.dumps(ONE_VIDEO))
    (tmp_path / "linked").symlink_to(tmp_path / "videos")
    monkeypatch.chdir(tmp_path)
    expected = str(tmp_path / "videos" / "v_a.mp4")
    assert [v.path for v in read_source("videos", SourceOptions()).videos] == [expected]
    assert [v.path for v in read_source("list.csv", SourceOptions()).videos] == [expected]
    assert [v.path for v in read_source("val_1.json", SourceOptions(video_root="videos")).videos] == [expected]
    assert [v.path for v in read_source("linked", SourceOptions()).videos] == [str(tmp_path / "linked" / "v_a.mp4")]


def test_a_source_without_videos_is_an_error_naming_what_was_looked_for(tmp_path):
    (tmp_path / "empty").mkdir()
    touch(tmp_path / "empty" / "notes.txt")
    with pytest.raises(SourceError, match=r"no videos found in .*empty; looked for \*\.mp4, \*\.mkv"):
        read_source(tmp_path / "empty", SourceOptions())
    (tmp_path / "val_1.json").write_text(json.dumps(ONE_VIDEO))
    missing = r"none of its 1 videos is under --video-root .*looked for a\.mp4 or v_a\.mp4"
    with pytest.raises(SourceError, match=missing):
        read_source(tmp_path / "val_1.json", SourceOptions(video_root=str(tmp_path / "empty")))
