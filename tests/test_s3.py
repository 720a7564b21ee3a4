"""An image folder in S3-compatible object storage, against a local S3 server that the test starts (moto):
no other network. Listed, split, streamed (and held in memory), cached by each object's ETag."""

import socket

import pytest
import yaml

from conftest import QUIET, SYNTHETIC, run_in_process, write_image_folder

moto_server = pytest.importorskip("moto.server")
boto3 = pytest.importorskip("boto3")

BUCKET = "team-data"


@pytest.fixture
def s3(tmp_path, monkeypatch):
    """A local S3 server holding ``s3://team-data/photos/{train,test}/<class>/*.png``; boto3 pointed at it."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    server = moto_server.ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    for name, value in {
        "AWS_ENDPOINT_URL": f"http://127.0.0.1:{port}",
        "AWS_ACCESS_KEY_ID": "test",
        "AWS_SECRET_ACCESS_KEY": "test",
        "AWS_DEFAULT_REGION": "us-east-1",
    }.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setattr("project.data.storage._CLIENT", None)  # a client for this server
    client = boto3.client("s3")
    client.create_bucket(Bucket=BUCKET)
    images = write_image_folder(tmp_path / "local", classes=("cat", "dog"), per_class=12)
    for file in sorted(images.rglob("*.png")):
        client.upload_file(str(file), BUCKET, f"photos/{file.relative_to(images).as_posix()}")
    monkeypatch.chdir(tmp_path)
    yield client
    server.stop()


def fit(monkeypatch, *args):
    run_in_process(
        monkeypatch,
        "fit",
        "--config",
        SYNTHETIC,
        *QUIET,
        "--data",
        "ImageFolderDataModule",
        "--data.root",
        f"s3://{BUCKET}/photos",
        "--data.batch_size",
        "8",
        "--data.val_size",
        "4",
        "--data.cache_dir",
        "cache",
        "--trainer.max_steps",
        "2",
        "--model.scheduler.warmup_steps",
        "1",
        *args,
    )


def test_an_s3_folder_is_split_streamed_and_cached_by_etag(s3, tmp_path, monkeypatch, capsys):
    fit(monkeypatch, "--data.streaming", "true", "--data.num_workers", "1")
    run = tmp_path / "logs" / "synthetic" / "version_0"
    assert (run / "checkpoints" / "last.ckpt").is_file()
    config = yaml.safe_load((run / "config.yaml").read_text())
    assert config["data"]["init_args"]["root"] == f"s3://{BUCKET}/photos"  # not made into a local path
    lines = (run / "splits.csv").read_text().splitlines()
    assert lines[0] == "image,split" and len(lines) == 1 + 24 + 24
    assert {line.split(",")[1] for line in lines[1:]} == {"train", "val", "test"}
    assert all(line.startswith(("train/cat/", "train/dog/", "test/cat/", "test/dog/")) for line in lines[1:])
    shards = sorted(path.name.split("-")[2] for path in (tmp_path / "cache").glob("*.shards"))
    assert shards == ["test", "train", "val"]
    assert capsys.readouterr().err.count(") into ") == 3  # each split written once (the line ends so)

    # Run again: nothing rewritten. Replace one training object: its split (only) is written anew.
    fit(monkeypatch, "--data.streaming", "true", "--data.num_workers", "1", "--data.splits", str(run / "splits.csv"))
    assert "writing the" not in capsys.readouterr().err
    key = f"photos/{next(line for line in lines[1:] if line.endswith(',train')).split(',')[0]}"
    s3.put_object(Bucket=BUCKET, Key=key, Body=s3.get_object(Bucket=BUCKET, Key=key)["Body"].read() + b"\0")
    fit(monkeypatch, "--data.streaming", "true", "--data.num_workers", "0", "--data.splits", str(run / "splits.csv"))
    err = capsys.readouterr().err
    assert err.count(") into ") == 1 and "writing the train split" in err
    assert len(list((tmp_path / "cache").glob("*-train-*.shards"))) == 1  # the stale one removed


def test_an_s3_folder_held_in_memory_trains_and_a_missing_bucket_is_one_line(s3, tmp_path, monkeypatch, capsys):
    fit(monkeypatch, "--data.streaming", "false")
    assert sorted(path.name.split("-")[2] for path in (tmp_path / "cache").glob("*.pt")) == ["test", "train", "val"]
    with pytest.raises(SystemExit) as stopped:
        fit(monkeypatch, "--data.root", "s3://no-such-bucket/photos")
    message = str(stopped.value.code) + capsys.readouterr().err
    [line] = [line for line in message.splitlines() if line.startswith("error:")]
    assert "cannot list s3://no-such-bucket/photos" in line and "NoSuchBucket" in line, line


def test_shards_kept_in_the_bucket_are_written_by_the_first_run_and_streamed_by_the_next(
    s3, tmp_path, monkeypatch, capsys
):
    # LitData keeps the chunks it downloads in a local cache: here, in the test's folder.
    monkeypatch.setattr("litdata.utilities.dataset_utilities._LITDATA_CACHE_DIR", str(tmp_path / "chunks"))
    fit(monkeypatch, "--data.cache_dir", f"s3://{BUCKET}/cache", "--data.num_workers", "1")
    assert capsys.readouterr().err.count(") into ") == 3
    keys = [entry["Key"] for entry in s3.list_objects_v2(Bucket=BUCKET, Prefix="cache/")["Contents"]]
    splits = {key.split("/")[1].split("-")[2] for key in keys}
    assert splits == {"train", "val", "test"} and sum(key.endswith("/channel_stats.json") for key in keys) == 3
    assert not (tmp_path / "cache").exists()  # nothing of the run's data kept on the machine but LitData's chunks
    assert list((tmp_path / "chunks").rglob("chunk-*.bin"))

    # Another machine (no local chunks) trains from the bucket's shards, writing none.
    run = tmp_path / "logs" / "synthetic" / "version_0"
    monkeypatch.setattr("litdata.utilities.dataset_utilities._LITDATA_CACHE_DIR", str(tmp_path / "other"))
    fit(monkeypatch, "--data.cache_dir", f"s3://{BUCKET}/cache", "--data.splits", str(run / "splits.csv"))
    assert "writing the" not in capsys.readouterr().err
    assert list((tmp_path / "other").rglob("chunk-*.bin"))
    assert (tmp_path / "logs" / "synthetic" / "version_1" / "checkpoints" / "last.ckpt").is_file()
