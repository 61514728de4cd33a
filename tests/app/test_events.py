"""GET /v1/videos/{id}/events: Server-Sent Events replayed from the job's stream."""

from __future__ import annotations

import json
import threading

from api_harness import complete_job, create


def read_events(client, video_id, headers=None) -> list[tuple[str, str, dict]]:
    events, current = [], {}
    with client.stream("GET", f"/v1/videos/{video_id}/events", headers=headers or {}) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        for line in response.iter_lines():
            if line.startswith(":"):
                continue
            if not line:
                if current:
                    events.append((current["id"], current["event"], json.loads(current["data"])))
                current = {}
                continue
            name, _, value = line.partition(": ")
            current[name] = value
    return events


def test_history_is_replayed_and_the_stream_ends_at_the_final_status(api, client):
    video_id = create(client).json()["id"]
    api.store.start(video_id, "w1")
    for progress in (25, 50, 75):
        api.store.set_progress(video_id, progress)
    api.store.set_progress(video_id, 75)  # unchanged progress publishes nothing
    assert api.store.complete(video_id, {})
    events = read_events(client, video_id)
    types = [event_type for _, event_type, _ in events]
    assert types == ["video.queued", "video.started", "video.progress", "video.progress", "video.progress",
                     "video.completed"]
    assert [video["progress"] for _, _, video in events] == [0, 0, 25, 50, 75, 100]
    assert [video["status"] for _, _, video in events] == ["queued", "in_progress", "in_progress", "in_progress",
                                                          "in_progress", "completed"]
    assert all(video["id"] == video_id for _, _, video in events)


def test_live_subscriber_sees_new_events_then_the_end(api, client):
    video_id = create(client).json()["id"]
    received: list = []
    reader = threading.Thread(target=lambda: received.extend(read_events(client, video_id)))
    reader.start()
    api.store.start(video_id, "w1")
    api.store.set_progress(video_id, 40)
    api.store.fail(video_id, "generation_failed", "out of memory")
    reader.join(timeout=60)
    assert not reader.is_alive()
    types = [t for _, t, _ in received]
    assert types == ["video.queued", "video.started", "video.progress", "video.failed"]
    assert received[-1][2]["error"] == {"code": "generation_failed", "message": "out of memory"}


def test_last_event_id_resumes_after_that_event(api, client):
    video_id = create(client).json()["id"]
    api.store.start(video_id, "w1")
    api.store.set_progress(video_id, 30)
    api.store.mark_cancelled(video_id)
    everything = read_events(client, video_id)
    resumed = read_events(client, video_id, headers={"Last-Event-ID": everything[1][0]})
    assert resumed == everything[2:]
    assert resumed[-1][1] == "video.cancelled"


def test_expired_history_still_reports_the_final_status(api, client):
    video_id = create(client).json()["id"]
    complete_job(api, video_id)
    api.redis.delete(f"reel:job:{video_id}:events")  # as after events_ttl_seconds
    events = read_events(client, video_id)
    assert [t for _, t, _ in events] == ["video.completed"]


def test_snapshots_keep_unicode_and_control_characters(api, client):
    prompt = "un cercle rouge 🎈 qui bouge — \"quoted\" \\ back\tslash\u0001"
    video_id = create(client, prompt=prompt, metadata={"clé": "valeur ✓"}).json()["id"]
    api.store.mark_cancelled(video_id)
    [queued, cancelled] = read_events(client, video_id)
    assert queued[2]["prompt"] == prompt and cancelled[2]["metadata"] == {"clé": "valeur ✓"}
