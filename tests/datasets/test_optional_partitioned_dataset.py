from __future__ import annotations

from so8t_kedro.datasets import OptionalPartitionedDataset

RAW_BYTES = {"type": "text.TextDataset", "fs_args": {"open_args_load": {"mode": "rb"}}}


def test_missing_and_empty_folders_load_as_no_partitions(tmp_path):
    missing = OptionalPartitionedDataset(path=str(tmp_path / "absent"), dataset=RAW_BYTES)
    assert missing.load() == {}
    (tmp_path / "empty").mkdir()
    empty = OptionalPartitionedDataset(path=str(tmp_path / "empty"), dataset=RAW_BYTES)
    assert empty.load() == {}


def test_files_load_as_bytes_per_partition(tmp_path):
    (tmp_path / "four_class_a.jsonl").write_bytes(b'{"text": "a"}\n')
    (tmp_path / "four_class_b.jsonl").write_bytes(b"\xff")
    dataset = OptionalPartitionedDataset(path=str(tmp_path), dataset=RAW_BYTES)
    partitions = dataset.load()
    assert sorted(partitions) == ["four_class_a.jsonl", "four_class_b.jsonl"]
    assert partitions["four_class_a.jsonl"]() == b'{"text": "a"}\n'
    assert partitions["four_class_b.jsonl"]() == b"\xff"
    (tmp_path / "four_class_c.jsonl").write_bytes(b"")
    assert len(dataset.load()) == 3  # a new file is seen without re-creating the dataset
