"""S3Storage against a real S3 protocol server (moto's, over HTTP on a free port)."""

from __future__ import annotations

import hashlib
from urllib.parse import parse_qs, urlsplit

import boto3
import httpx
import pytest

import app.storage
from app.settings import Settings
from app.storage import S3Storage, make_storage


@pytest.fixture
def storage(s3_endpoint, s3_bucket) -> S3Storage:
    return S3Storage(bucket=s3_bucket, prefix="tenant-a", endpoint_url=s3_endpoint, region="us-east-1")


@pytest.fixture
def raw(s3_endpoint, s3_credentials):
    """A plain boto3 client, to look at the bucket without going through S3Storage."""
    return boto3.client("s3", endpoint_url=s3_endpoint, region_name="us-east-1")


def bucket_keys(raw, bucket: str) -> list[str]:
    return sorted(item["Key"] for item in raw.list_objects_v2(Bucket=bucket).get("Contents", []))


def test_put_get_stat_round_trip(storage, raw, s3_bucket):
    data = b"\x00\x00\x00\x18ftypmp42" + bytes(range(256)) * 40
    stored = storage.put("video_a/video.mp4", data, "video/mp4")

    assert stored.key == "video_a/video.mp4"
    assert stored.size == len(data)
    assert stored.etag == f'"{hashlib.md5(data).hexdigest()}"'
    assert storage.get("video_a/video.mp4") == data
    assert storage.stat("video_a/video.mp4") == stored
    assert storage.exists("video_a/video.mp4")
    assert storage.size("video_a/video.mp4") == len(data)
    assert storage.etag("video_a/video.mp4") == stored.etag
    # The prefix is applied in the bucket, and only there: callers speak in plain keys.
    assert bucket_keys(raw, s3_bucket) == ["tenant-a/video_a/video.mp4"]
    head = raw.head_object(Bucket=s3_bucket, Key="tenant-a/video_a/video.mp4")
    assert head["ContentType"] == "video/mp4"


def test_put_from_a_file_path(storage, tmp_path):
    path = tmp_path / "thumbnail.webp"
    path.write_bytes(b"RIFF....WEBPVP8 " + b"\x11" * 5000)
    stored = storage.put("video_b/thumbnail.webp", path, "image/webp")
    assert stored.size == path.stat().st_size
    assert storage.get("video_b/thumbnail.webp") == path.read_bytes()
    assert storage.stat("video_b/thumbnail.webp").content_type == "image/webp"


def test_missing_keys(storage):
    assert storage.stat("video_none/video.mp4") is None
    assert not storage.exists("video_none/video.mp4")
    with pytest.raises(FileNotFoundError):
        storage.get("video_none/video.mp4")
    with pytest.raises(FileNotFoundError):
        storage.size("video_none/video.mp4")
    # A missing object fails when the stream is opened, before any response starts.
    with pytest.raises(FileNotFoundError):
        storage.open_range("video_none/video.mp4")


@pytest.mark.parametrize("key", ["", "/abs/video.mp4", "video_a/../other/video.mp4", "video_a//video.mp4", "a\\b"])
def test_bad_keys_are_refused(storage, key):
    with pytest.raises(ValueError, match="invalid storage key"):
        storage.put(key, b"x", "application/octet-stream")


def test_open_range_streams_the_bytes_asked_for(storage):
    data = bytes(range(256)) * 1024  # 256 KiB: several chunks
    storage.put("video_c/video.mp4", data, "video/mp4")

    assert b"".join(storage.open_range("video_c/video.mp4")) == data
    assert b"".join(storage.open_range("video_c/video.mp4", 0, 0)) == data[:1]
    assert b"".join(storage.open_range("video_c/video.mp4", 1000, 70_000)) == data[1000:70_001]
    assert b"".join(storage.open_range("video_c/video.mp4", 200_000)) == data[200_000:]
    chunks = list(storage.open_range("video_c/video.mp4"))
    assert len(chunks) >= 2 and all(len(chunk) <= app.storage.CHUNK_BYTES for chunk in chunks)


def test_a_redelivered_job_overwrites_its_assets(storage):
    storage.put("video_d/video.mp4", b"first attempt", "video/mp4")
    second = storage.put("video_d/video.mp4", b"second attempt, complete", "video/mp4")
    assert storage.get("video_d/video.mp4") == b"second attempt, complete"
    assert storage.stat("video_d/video.mp4").etag == second.etag


def test_delete_prefix_removes_one_job_only(storage, raw, s3_bucket, monkeypatch):
    # Small delete batches, so that several DeleteObjects requests are needed.
    monkeypatch.setattr(app.storage, "S3_DELETE_BATCH", 2)
    for name in ("video.mp4", "thumbnail.webp", "spritesheet.jpg", "extra/a.bin", "extra/b.bin"):
        storage.put(f"video_1/{name}", b"x", "application/octet-stream")
    # A job whose id starts with the other's id must survive.
    storage.put("video_10/video.mp4", b"keep", "video/mp4")

    assert storage.delete_prefix("video_1") == 5
    assert bucket_keys(raw, s3_bucket) == ["tenant-a/video_10/video.mp4"]
    assert storage.delete_prefix("video_1") == 0
    storage.delete("video_10/video.mp4")
    storage.delete("video_10/video.mp4")  # deleting what is gone is not an error
    assert bucket_keys(raw, s3_bucket) == []


def test_presigned_url_carries_the_expiry_and_serves_the_bytes(storage):
    data = b"presigned bytes " * 100
    storage.put("video_e/video.mp4", data, "video/mp4")

    url = storage.presigned_url("video_e/video.mp4", expires_in=120)
    query = parse_qs(urlsplit(url).query)
    assert query["X-Amz-Expires"] == ["120"]
    assert query["X-Amz-Algorithm"] == ["AWS4-HMAC-SHA256"]
    assert "X-Amz-Signature" in query
    assert urlsplit(url).path == f"/{storage.bucket}/tenant-a/video_e/video.mp4"

    response = httpx.get(url)
    assert response.status_code == 200
    assert response.content == data
    assert response.headers["content-type"] == "video/mp4"

    longer = storage.presigned_url("video_e/video.mp4", expires_in=7 * 24 * 3600)
    assert parse_qs(urlsplit(longer).query)["X-Amz-Expires"] == [str(7 * 24 * 3600)]


@pytest.mark.parametrize("expires_in", [0, -5, 7 * 24 * 3600 + 1])
def test_presigned_url_refuses_an_impossible_expiry(storage, expires_in):
    with pytest.raises(ValueError, match="expires_in"):
        storage.presigned_url("video_e/video.mp4", expires_in=expires_in)


def test_presigned_urls_are_signed_for_the_public_endpoint(s3_endpoint, s3_bucket):
    # Inside a compose network the API reaches the bucket as 127.0.0.1 (say, minio:9000);
    # the client is handed a URL for the address it can reach (say, localhost:9000).
    port = urlsplit(s3_endpoint).port
    public = f"http://localhost:{port}"
    storage = S3Storage(bucket=s3_bucket, endpoint_url=s3_endpoint, region="us-east-1", public_endpoint_url=public)
    storage.put("video_f/video.mp4", b"public", "video/mp4")

    url = storage.presigned_url("video_f/video.mp4", 60)
    assert urlsplit(url).netloc == f"localhost:{port}"
    assert httpx.get(url.replace("localhost", "127.0.0.1")).content == b"public"


def test_make_storage_builds_s3_from_settings(s3_endpoint, s3_bucket, s3_credentials):
    settings = Settings(
        storage="s3", s3_bucket=s3_bucket, s3_prefix="/jobs/", s3_endpoint_url=s3_endpoint, s3_region="us-east-1"
    )
    storage = make_storage(settings)
    assert isinstance(storage, S3Storage)
    storage.put("video_g/video.mp4", b"from settings", "video/mp4")
    assert storage.get("video_g/video.mp4") == b"from settings"
    raw = boto3.client("s3", endpoint_url=s3_endpoint, region_name="us-east-1")
    assert bucket_keys(raw, s3_bucket) == ["jobs/video_g/video.mp4"]


def test_a_missing_bucket_is_reported_not_hidden(s3_endpoint, s3_credentials):
    storage = S3Storage(bucket="no-such-bucket-here", endpoint_url=s3_endpoint, region="us-east-1")
    with pytest.raises(Exception, match="NoSuchBucket"):
        storage.put("video_h/video.mp4", b"x", "video/mp4")


def test_an_unreachable_store_raises(s3_credentials, closed_port):
    storage = S3Storage(bucket="reel", endpoint_url=f"http://127.0.0.1:{closed_port}", region="us-east-1")
    with pytest.raises(Exception, match="Could not connect"):
        storage.stat("video_i/video.mp4")


# ----- the API's content endpoint on S3 storage (real uvicorn, real Valkey, the S3 server)

ASSETS = {
    "video": ("video.mp4", "video/mp4", b"\x00\x00\x00\x18ftypmp42" + bytes(range(256)) * 64),
    "thumbnail": ("thumbnail.webp", "image/webp", b"RIFF\x00\x00\x00\x00WEBPVP8 " + b"t" * 300),
    "spritesheet": ("spritesheet.jpg", "image/jpeg", b"\xff\xd8\xff\xe0" + b"s" * 500),
}


def api_client(api) -> httpx.Client:
    return httpx.Client(base_url=api.url, headers={"Authorization": f"Bearer {api.settings.api_key}"}, timeout=30)


def finished_job(api, store_assets: bool = True) -> str:
    """A job created through the API, then completed the way a worker completes it."""
    import redis

    from app.jobs import JobStore

    with api_client(api) as client:
        response = client.post("/v1/videos", json={"prompt": "a red circle moving left"})
    assert response.status_code == 200, response.text
    job_id = response.json()["id"]
    store = JobStore(redis.Redis.from_url(api.settings.redis_url), api.settings)
    assert store.start(job_id, "deploy-test-worker")
    if store_assets:
        storage = make_storage(api.settings)
        assets = {variant: storage.put(f"{job_id}/{name}", data, content_type).as_asset()
                  for variant, (name, content_type, data) in ASSETS.items()}
    else:
        assets = {variant: {"key": f"{job_id}/{name}", "size": len(data), "etag": '"0"', "content_type": content_type}
                  for variant, (name, content_type, data) in ASSETS.items()}
    assert store.complete(job_id, assets)
    return job_id


def test_content_redirects_to_a_presigned_url(s3_api, s3_bucket):
    api = s3_api(content_redirect=True, presigned_url_seconds=300)
    job_id = finished_job(api)
    with api_client(api) as client:
        for variant, (name, content_type, data) in ASSETS.items():
            response = client.get(f"/v1/videos/{job_id}/content", params={"variant": variant})
            assert response.status_code == 302, response.text
            location = response.headers["location"]
            assert urlsplit(location).path == f"/{s3_bucket}/{job_id}/{name}"
            assert parse_qs(urlsplit(location).query)["X-Amz-Expires"] == ["300"]
            fetched = httpx.get(location)
            assert fetched.status_code == 200
            assert fetched.content == data
            assert fetched.headers["content-type"] == content_type
    # Players seek with Range requests; after the redirect the bucket answers them.
    partial = httpx.get(location, headers={"Range": "bytes=4-11"})
    assert partial.status_code == 206 and partial.content == ASSETS["spritesheet"][2][4:12]


def test_content_streams_through_the_api_when_redirect_is_off(s3_api):
    api = s3_api(content_redirect=False)
    job_id = finished_job(api)
    data = ASSETS["video"][2]
    with api_client(api) as client:
        whole = client.get(f"/v1/videos/{job_id}/content")
        assert whole.status_code == 200
        assert whole.content == data
        assert whole.headers["etag"] == f'"{hashlib.md5(data).hexdigest()}"'
        part = client.get(f"/v1/videos/{job_id}/content", headers={"Range": "bytes=100-4099"})
        assert part.status_code == 206
        assert part.content == data[100:4100]
        assert part.headers["content-range"] == f"bytes 100-4099/{len(data)}"


def test_deleting_a_video_deletes_its_objects(s3_api, raw, s3_bucket):
    api = s3_api()
    job_id, other_id = finished_job(api), finished_job(api)
    assert len(bucket_keys(raw, s3_bucket)) == 6
    with api_client(api) as client:
        response = client.delete(f"/v1/videos/{job_id}")
        assert response.status_code == 200, response.text
        assert client.get(f"/v1/videos/{job_id}").status_code == 404
    assert bucket_keys(raw, s3_bucket) == sorted(f"{other_id}/{name}" for name, _, _ in ASSETS.values())


def test_content_during_an_s3_outage_is_503(s3_api, closed_port):
    api = s3_api(s3_endpoint_url=f"http://127.0.0.1:{closed_port}", content_redirect=False)
    job_id = finished_job(api, store_assets=False)
    with api_client(api) as client:
        response = client.get(f"/v1/videos/{job_id}/content")
    assert response.status_code == 503
    assert response.json()["error"]["code"]
