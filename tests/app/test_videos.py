"""POST/GET/DELETE /v1/videos and friends against a real uvicorn server and Valkey."""

from __future__ import annotations

import json
import threading

import httpx
import pytest

from api_harness import assert_error, complete_job, create
from waiting import wait_until


def test_create_json_returns_a_queued_video(api, client):
    response = create(client, size="112x64", seconds="2", seed=7, steps=12, guidance=3.5,
                      negative_prompt="blurry", metadata={"user": "42"})
    assert response.status_code == 200, response.text
    video = response.json()
    assert video["id"].startswith("video_") and len(video["id"]) == len("video_") + 26
    assert video["object"] == "video" and video["status"] == "queued" and video["progress"] == 0
    assert video["queue_position"] == 1
    assert (video["size"], video["seconds"], video["fps"], video["frames"]) == ("112x64", "2", 8, 17)
    assert (video["seed"], video["steps"], video["guidance"]) == (7, 12, 3.5)
    assert video["negative_prompt"] == "blurry" and video["metadata"] == {"user": "42"}
    assert video["model"] == "reel-shapes-v1" and video["error"] is None
    assert response.headers["openai-poll-after-ms"] == "1000"
    stored = api.store.get(video["id"])
    assert stored.tenant == "acme" and stored.status == "queued"


def test_create_multipart_with_numbers_as_strings_and_openai_size(api, client):
    response = client.post("/v1/videos", data={
        "prompt": "a blue square", "seconds": "4", "size": "1280x720", "seed": "3",
        "metadata[team]": "red", "webhook_url": "https://93.184.216.34/hook",
        "webhook_events[]": ["video.started", "video.completed"],
    })
    assert response.status_code == 200, response.text
    video = response.json()
    assert video["size"] == "112x64"  # OpenAI's landscape size mapped onto the model's landscape size
    assert video["seconds"] == "4" and video["frames"] == 33 and video["seed"] == 3
    assert video["metadata"] == {"team": "red"}
    assert api.store.get(video["id"]).webhook_events == ["video.started", "video.completed"]


def test_create_form_metadata_as_json_string(client):
    response = client.post("/v1/videos", data={"prompt": "p", "metadata": json.dumps({"a": "b"}), "seconds": 1})
    assert response.status_code == 200, response.text
    assert response.json()["metadata"] == {"a": "b"}


def test_defaults_fill_in_and_seed_is_drawn(client):
    video = create(client).json()
    assert (video["size"], video["seconds"], video["steps"], video["guidance"]) == ("64x64", "2", 20, 4.0)
    assert isinstance(video["seed"], int)


@pytest.mark.parametrize("fields, param", [
    ({"size": "65x64"}, "size"),
    ({"size": "16x16"}, "size"),
    ({"size": "512x512"}, "size"),
    ({"size": "big"}, "size"),
    ({"seconds": "9"}, "seconds"),
    ({"seconds": 2.5}, "seconds"),
    ({"seconds": "two"}, "seconds"),
    ({"seconds": "12"}, "seconds"),
    ({"steps": 0}, "steps"),
    ({"steps": 101}, "steps"),
    ({"steps": "many"}, "steps"),
    ({"guidance": -1}, "guidance"),
    ({"guidance": 20.5}, "guidance"),
    ({"prompt": ""}, "prompt"),
    ({"prompt": "   "}, "prompt"),
    ({"prompt": "x" * 2001}, "prompt"),
    ({"seed": -1}, "seed"),
    ({"metadata": {"k": 1}}, "metadata.k"),
    ({"metadata": {f"k{i}": "v" for i in range(17)}}, "metadata"),
    ({"webhook_events": ["video.exploded"]}, "webhook_events.0"),
    ({"webhook_url": "ftp://example.com/hook"}, "webhook_url"),
    ({"model": "no-such-model"}, "model"),
    ({"colour": "red"}, "colour"),
])
def test_bad_fields_are_400_naming_the_param(client, fields, param):
    assert_error(create(client, **fields), 400, param)


def test_missing_prompt_and_bad_bodies(client):
    assert_error(client.post("/v1/videos", json={"size": "64x64"}), 400, "prompt")
    assert_error(client.post("/v1/videos", content=b"{not json", headers={"content-type": "application/json"}), 400)
    assert_error(client.post("/v1/videos", json=["a", "list"]), 400)
    assert_error(client.post("/v1/videos", content=b"prompt", headers={"content-type": "text/plain"}), 415)
    files = {"input_reference": ("ref.png", b"\x89PNG", "image/png")}
    assert_error(client.post("/v1/videos", data={"prompt": "p"}, files=files), 400, "input_reference")


def test_openai_model_names_mean_the_default_model(client):
    video = create(client, model="sora-2").json()
    assert video["model"] == "reel-shapes-v1"


def test_auth_is_required_and_checked(api):
    with api.client(None) as anonymous:
        assert assert_error(create(anonymous), 401)["type"] == "authentication_error"
    with api.client("reel_sk_not_a_key") as wrong:
        assert_error(wrong.get("/v1/videos"), 401)
    with httpx.Client(base_url=api.url, headers={"Authorization": "Basic abc"}) as basic:
        assert_error(basic.get("/v1/videos"), 401)


def test_revoked_key_is_refused(api):
    from app.auth import create_key

    key, key_id, _ = create_key(api.store, "acme")
    with api.client(key) as http:
        assert http.get("/v1/videos").status_code == 200
        assert api.store.revoke_api_key(key_id)
        assert_error(http.get("/v1/videos"), 401)


def test_another_tenants_video_is_404_everywhere(api, client):
    video_id = create(client).json()["id"]
    with api.client(api.new_key("globex")) as other:
        for method, path in [("GET", ""), ("GET", "/content"), ("GET", "/events"), ("POST", "/cancel"),
                             ("DELETE", ""), ("POST", "/remix")]:
            kwargs = {"json": {"prompt": "x"}} if path == "/remix" else {}
            assert_error(other.request(method, f"/v1/videos/{video_id}{path}", **kwargs), 404)
        assert other.get("/v1/videos").json()["data"] == []
    assert api.store.get(video_id).status == "queued"  # the other tenant's cancel did nothing


def test_unknown_video_and_unknown_route_are_404_in_openai_shape(client):
    assert_error(client.get("/v1/videos/video_00000000000000000000000000"), 404, "video_id")
    assert_error(client.get("/v1/nothing-here"), 404)
    assert_error(client.put("/v1/videos"), 405)


def test_idempotency_key_replays_and_conflicts(api, client):
    headers = {"Idempotency-Key": "order-17"}
    first = client.post("/v1/videos", json={"prompt": "p", "seed": 1}, headers=headers)
    again = client.post("/v1/videos", json={"prompt": "p", "seed": 1}, headers=headers)
    assert first.status_code == again.status_code == 200
    assert again.json()["id"] == first.json()["id"]
    assert again.headers["Idempotent-Replayed"] == "true"
    # The same parameters as a form are the same request.
    as_form = client.post("/v1/videos", data={"prompt": "p", "seed": "1"}, headers=headers)
    assert as_form.json()["id"] == first.json()["id"]
    conflict = client.post("/v1/videos", json={"prompt": "other", "seed": 1}, headers=headers)
    assert assert_error(conflict, 409, "Idempotency-Key")["code"] == "idempotency_key_reused"
    assert api.store.queue_depth() == 1
    assert api.redis.llen("generate") == 1  # one task, not three
    # Keys are per tenant: another tenant's same key makes its own job.
    with api.client(api.new_key("globex")) as other:
        theirs = other.post("/v1/videos", json={"prompt": "p", "seed": 1}, headers=headers).json()
    assert theirs["id"] != first.json()["id"]


def test_concurrent_retries_with_one_idempotency_key_make_one_job(api, key):
    ids, errors = [], []

    def post():
        with api.client(key) as http:
            response = http.post("/v1/videos", json={"prompt": "same"}, headers={"Idempotency-Key": "k1"})
            (ids if response.status_code == 200 else errors).append(response.json())

    threads = [threading.Thread(target=post) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert len({v["id"] for v in ids}) == 1
    assert api.store.queue_depth() == 1


def test_list_pagination_cursors_order_and_status(api, client):
    ids = [create(client, prompt=f"video {i}").json()["id"] for i in range(5)]
    page = client.get("/v1/videos", params={"limit": 2}).json()
    assert page["object"] == "list" and page["has_more"] is True
    assert [v["id"] for v in page["data"]] == [ids[4], ids[3]]
    assert (page["first_id"], page["last_id"]) == (ids[4], ids[3])
    seen = [v["id"] for v in page["data"]]
    while page["has_more"]:
        page = client.get("/v1/videos", params={"limit": 2, "after": page["last_id"]}).json()
        seen += [v["id"] for v in page["data"]]
    assert seen == ids[::-1]
    ascending = client.get("/v1/videos", params={"order": "asc", "limit": 3}).json()
    assert [v["id"] for v in ascending["data"]] == ids[:3] and ascending["has_more"]
    # Status filter: cancel two, complete one.
    client.post(f"/v1/videos/{ids[1]}/cancel")
    client.post(f"/v1/videos/{ids[3]}/cancel")
    complete_job(api, ids[0])
    cancelled = client.get("/v1/videos", params={"status": "cancelled", "limit": 1}).json()
    assert [v["id"] for v in cancelled["data"]] == [ids[3]] and cancelled["has_more"]
    rest = client.get("/v1/videos", params={"status": "cancelled", "after": ids[3]}).json()
    assert [v["id"] for v in rest["data"]] == [ids[1]] and not rest["has_more"]
    queued = client.get("/v1/videos", params={"status": "queued"}).json()["data"]
    assert [(v["id"], v["queue_position"]) for v in queued] == [(ids[4], 2), (ids[2], 1)]
    assert [v["id"] for v in client.get("/v1/videos", params={"status": "completed"}).json()["data"]] == [ids[0]]
    empty = client.get("/v1/videos", params={"status": "failed"}).json()
    assert empty == {"object": "list", "data": [], "first_id": None, "last_id": None, "has_more": False}


@pytest.mark.parametrize("params, param", [({"limit": 0}, "limit"), ({"limit": 101}, "limit"),
                                           ({"order": "sideways"}, "order"), ({"status": "lost"}, "status")])
def test_list_bad_query_is_400(client, params, param):
    assert_error(client.get("/v1/videos", params=params), 400, param)


def test_cancel_queued_job_leaves_the_queue(api, client):
    first, second, third = (create(client).json()["id"] for _ in range(3))
    assert client.get(f"/v1/videos/{third}").json()["queue_position"] == 3
    response = client.post(f"/v1/videos/{second}/cancel")
    assert response.status_code == 200
    video = response.json()
    assert video["status"] == "cancelled" and video["queue_position"] is None and video["completed_at"]
    assert "openai-poll-after-ms" not in response.headers
    assert client.get(f"/v1/videos/{third}").json()["queue_position"] == 2
    assert client.post(f"/v1/videos/{second}/cancel").json()["status"] == "cancelled"  # idempotent
    assert not api.store.start(second, "w1")  # a worker that gets the task skips it


def test_cancel_running_job_sets_the_flag_the_worker_reads(api, client):
    video_id = create(client).json()["id"]
    assert api.store.start(video_id, "w1")
    assert api.store.set_progress(video_id, 10) is False
    video = client.post(f"/v1/videos/{video_id}/cancel").json()
    assert video["status"] == "in_progress"
    assert api.store.is_cancel_requested(video_id)
    assert api.store.set_progress(video_id, 20) is True  # the worker's next step sees it
    assert api.store.mark_cancelled(video_id)
    assert client.get(f"/v1/videos/{video_id}").json()["status"] == "cancelled"
    assert client.post(f"/v1/videos/{video_id}/cancel").status_code == 200


def test_cancel_completed_job_is_409(api, client):
    video_id = create(client).json()["id"]
    complete_job(api, video_id)
    assert_error(client.post(f"/v1/videos/{video_id}/cancel"), 409, "video_id")


def test_delete_finished_job_and_409_while_running(api, client):
    video_id = create(client).json()["id"]
    assert_error(client.delete(f"/v1/videos/{video_id}"), 409, "video_id")
    api.store.start(video_id, "w1")
    assert_error(client.delete(f"/v1/videos/{video_id}"), 409, "video_id")
    from app.storage import LocalStorage

    storage = LocalStorage(api.settings.assets_dir)
    stored = storage.put(f"{video_id}/video.mp4", b"mp4 bytes", "video/mp4")
    api.store.complete(video_id, {"video": stored.as_asset()})
    response = client.delete(f"/v1/videos/{video_id}")
    assert response.status_code == 200
    assert response.json() == {"id": video_id, "object": "video.deleted", "deleted": True}
    assert not storage.exists(f"{video_id}/video.mp4")
    assert_error(client.get(f"/v1/videos/{video_id}"), 404)
    assert client.get("/v1/videos").json()["data"] == []


def test_remix_copies_size_duration_and_seed(api, client):
    source = create(client, size="64x112", seconds=4, seed=99, steps=8).json()
    assert_error(client.post(f"/v1/videos/{source['id']}/remix", json={"prompt": "now green"}), 409, "video_id")
    complete_job(api, source["id"])
    response = client.post(f"/v1/videos/{source['id']}/remix", json={"prompt": "now green"})
    assert response.status_code == 200, response.text
    remix = response.json()
    assert remix["id"] != source["id"] and remix["status"] == "queued"
    assert remix["remixed_from_video_id"] == source["id"] and remix["prompt"] == "now green"
    assert (remix["size"], remix["seconds"], remix["seed"], remix["steps"]) == ("64x112", "4", 99, 8)
    assert_error(client.post(f"/v1/videos/{source['id']}/remix", json={"prompt": ""}), 400, "prompt")


def test_body_over_the_limit_is_413(make_api):
    api = make_api(max_body_bytes=2000)
    with api.client(api.new_key("acme")) as http:
        big = {"prompt": "p", "negative_prompt": "n" * 3000}
        assert_error(http.post("/v1/videos", json=big), 413)

        def chunks():  # no Content-Length: the size is counted as the body streams in
            yield b'{"prompt": "p", "negative_prompt": "'
            for _ in range(10):
                yield b"n" * 500
            yield b'"}'

        response = http.post("/v1/videos", content=chunks(), headers={"content-type": "application/json"})
        assert_error(response, 413)
        assert api.store.queue_depth() == 0


def test_queue_limits_give_429_with_retry_after(make_api):
    api = make_api(max_queued=3, max_queued_per_tenant=2)
    with api.client(api.new_key("acme")) as acme, api.client(api.new_key("globex")) as globex:
        assert create(acme).status_code == 200
        assert create(acme).status_code == 200
        limited = create(acme)
        assert assert_error(limited, 429)["type"] == "rate_limit_error"
        assert int(limited.headers["Retry-After"]) > 0
        assert create(globex).status_code == 200
        overall = create(globex)  # 3 queued overall
        assert_error(overall, 429)
        assert "Retry-After" in overall.headers
        # Cancelling frees a place.
        first = acme.get("/v1/videos").json()["data"][0]["id"]
        acme.post(f"/v1/videos/{first}/cancel")
        assert create(acme).status_code == 200


def test_concurrent_creates_never_exceed_the_queue_limit(make_api):
    api = make_api(max_queued=5, max_queued_per_tenant=5)
    key = api.new_key("acme")
    statuses = []

    def post():
        with api.client(key) as http:
            statuses.append(create(http).status_code)

    threads = [threading.Thread(target=post) for _ in range(12)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(statuses) == [200] * 5 + [429] * 7
    assert api.store.queue_depth() == 5


def test_prefer_wait_returns_the_finished_job(api, client):
    result = {}

    def post():
        result["response"] = client.post("/v1/videos", json={"prompt": "wait for me"}, headers={"Prefer": "wait=60"})

    thread = threading.Thread(target=post)
    thread.start()
    # Act as the worker once the job exists.
    job_id = wait_until(lambda: [job.id for job in api.store.list("acme", limit=1)[0]], what="the job")[0]
    complete_job(api, job_id)
    thread.join()
    response = result["response"]
    assert response.status_code == 200
    assert response.json()["status"] == "completed" and response.json()["id"] == job_id
    assert response.headers["Preference-Applied"] == "wait=60"


def test_prefer_wait_is_capped_and_returns_the_job_as_it_stands(make_api):
    api = make_api(max_prefer_wait_seconds=1)
    with api.client(api.new_key("acme")) as http:
        response = http.post("/v1/videos", json={"prompt": "p"}, headers={"Prefer": "wait=600"})
        assert response.status_code == 200
        assert response.json()["status"] == "queued"
        assert response.headers["Preference-Applied"] == "wait=1"


def test_unreachable_store_is_503(make_api, tmp_path):
    from api_harness import free_port

    api = make_api(redis_url=f"redis://127.0.0.1:{free_port()}/0", redis_connect_timeout=0.5, broker_send_timeout=0.5)
    with httpx.Client(base_url=api.url, headers={"Authorization": "Bearer reel_sk_x"}) as http:
        assert_error(http.get("/v1/videos"), 503)
        assert_error(http.post("/v1/videos", json={"prompt": "p"}), 503)
        assert_error(http.get("/readyz"), 503)
        assert http.get("/healthz").status_code == 200


def test_odd_bodies_are_400_not_500(client):
    mixed = client.post("/v1/videos", content=b"prompt=p&metadata[]=x&metadata[a]=y",
                        headers={"content-type": "application/x-www-form-urlencoded"})
    assert_error(mixed, 400, "metadata")
    nested = b'{"prompt": "p", "metadata": ' + b"[" * 5000 + b"]" * 5000 + b"}"
    assert_error(client.post("/v1/videos", content=nested, headers={"content-type": "application/json"}), 400)
    broken = client.post("/v1/videos", content=b"--xyz\r\nContent-Disposition: form-data\r\n\r\nno name\r\n",
                         headers={"content-type": "multipart/form-data; boundary=xyz"})
    assert 400 <= broken.status_code < 500 and "error" in broken.json()
    not_a_number = client.post("/v1/videos", content=b'{"prompt": "p", "guidance": NaN}',
                               headers={"content-type": "application/json"})
    assert_error(not_a_number, 400, "guidance")
    events = client.post("/v1/videos", data={"prompt": "p", "webhook_events": "video.completed,video.failed"})
    assert events.status_code == 400 and events.json()["error"]["param"] == "webhook_events"  # no webhook_url
