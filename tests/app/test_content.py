"""GET/HEAD /v1/videos/{id}/content: real bytes from LocalStorage, Range, ETag, expiry."""

from __future__ import annotations

import time

from api_harness import assert_error, complete_job, create


def test_content_before_completion_is_404(client):
    video_id = create(client).json()["id"]
    assert assert_error(client.get(f"/v1/videos/{video_id}/content"), 404)["code"] == "video_not_ready"


def test_full_download_of_every_variant(api, client):
    video_id = create(client).json()["id"]
    payloads = complete_job(api, video_id)
    video = client.get(f"/v1/videos/{video_id}").json()
    assert video["status"] == "completed" and video["progress"] == 100
    assert video["expires_at"] == video["completed_at"] + api.settings.asset_ttl_seconds
    for variant, content_type in [("video", "video/mp4"), ("thumbnail", "image/webp"), ("spritesheet", "image/jpeg")]:
        response = client.get(f"/v1/videos/{video_id}/content", params={"variant": variant})
        assert response.status_code == 200
        assert response.content == payloads[variant]
        assert response.headers["content-type"] == content_type
        assert response.headers["accept-ranges"] == "bytes"
        assert response.headers["etag"].startswith('"')
    assert client.get(f"/v1/videos/{video_id}/content").content == payloads["video"]  # default variant
    assert_error(client.get(f"/v1/videos/{video_id}/content", params={"variant": "poster"}), 400, "variant")


def test_range_etag_and_head(api, client):
    video_id = create(client).json()["id"]
    data = complete_job(api, video_id)["video"]
    url = f"/v1/videos/{video_id}/content"
    etag = client.get(url).headers["etag"]

    part = client.get(url, headers={"Range": "bytes=10-99"})
    assert part.status_code == 206
    assert part.content == data[10:100]
    assert part.headers["content-range"] == f"bytes 10-99/{len(data)}"
    assert part.headers["content-length"] == "90"

    tail = client.get(url, headers={"Range": "bytes=-16"})
    assert tail.status_code == 206 and tail.content == data[-16:]
    open_ended = client.get(url, headers={"Range": f"bytes={len(data) - 5}-"})
    assert open_ended.content == data[-5:]
    past_end = client.get(url, headers={"Range": f"bytes=0-{len(data) * 2}"})
    assert past_end.status_code == 206 and past_end.content == data

    unsatisfiable = client.get(url, headers={"Range": f"bytes={len(data)}-"})
    assert unsatisfiable.status_code == 416
    assert unsatisfiable.headers["content-range"] == f"bytes */{len(data)}"
    # A range that does not parse is ignored: the whole file.
    assert client.get(url, headers={"Range": "bytes=0-1,5-9"}).content == data
    # If-Range with a stale ETag sends the whole file.
    assert client.get(url, headers={"Range": "bytes=0-9", "If-Range": '"stale"'}).status_code == 200
    assert client.get(url, headers={"Range": "bytes=0-9", "If-Range": etag}).status_code == 206

    not_modified = client.get(url, headers={"If-None-Match": etag})
    assert not_modified.status_code == 304 and not_modified.content == b""
    assert client.get(url, headers={"If-None-Match": '"other"'}).status_code == 200

    head = client.head(url)
    assert head.status_code == 200 and head.content == b""
    assert head.headers["content-length"] == str(len(data)) and head.headers["etag"] == etag
    head_range = client.head(url, headers={"Range": "bytes=0-9"})
    assert head_range.status_code == 206 and head_range.headers["content-length"] == "10"


def test_expired_content_is_404(api, client):
    video_id = create(client).json()["id"]
    long_ago = time.time() - api.settings.asset_ttl_seconds - 60
    complete_job(api, video_id, now=long_ago)
    assert assert_error(client.get(f"/v1/videos/{video_id}/content"), 404, "variant")["code"] == "content_expired"
    assert video_id in api.store.expired_jobs()
    api.store.mark_expired(video_id)
    assert video_id not in api.store.expired_jobs()
    assert client.get(f"/v1/videos/{video_id}").json()["status"] == "completed"


def test_content_whose_file_is_gone_is_404(api, client):
    from app.storage import LocalStorage

    video_id = create(client).json()["id"]
    complete_job(api, video_id)
    LocalStorage(api.settings.assets_dir).delete_prefix(video_id)
    assert_error(client.get(f"/v1/videos/{video_id}/content"), 404)
