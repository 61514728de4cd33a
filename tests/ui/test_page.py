"""The web page at `/`, used as a person would: Chromium, the real API, a real worker.

Each test saves screenshots of the states it reaches under test-artifacts/ui/.
"""

from __future__ import annotations

import re
import time

import pytest

from waiting import wait_until

# Records every progress value a card shows, so that a test can tell a live bar from a jump to the end.
RECORD_PROGRESS = """
window.__progress = {};
new MutationObserver((records) => {
  for (const record of records) {
    const card = record.target;
    if (!card.classList || !card.classList.contains("card")) continue;
    (window.__progress[card.dataset.id] ||= []).push(Number(card.dataset.progress));
  }
}).observe(document, { subtree: true, attributes: true, attributeFilter: ["data-progress"] });
"""

WAIT_MS = 90_000  # bounds a hung job; a tiny-model job takes seconds


def enter_key(page, key: str) -> None:
    page.get_by_label("API key", exact=True).fill(key)
    page.get_by_role("button", name="Save key").click()
    page.locator("#compose").wait_for(state="visible")


def card_status(card) -> str:
    return card.get_attribute("data-status")


def wait_status(page, video_id: str, *statuses: str) -> None:
    page.wait_for_function(
        "([id, statuses]) => statuses.includes(document.querySelector(`.card[data-id='${id}']`)?.dataset.status)",
        arg=[video_id, list(statuses)],
        timeout=WAIT_MS,
    )


def submit(page, prompt: str, steps: str = "", size: str | None = None, seconds: str | None = None,
           key: str = "Enter") -> str:
    """Fill the form, press Enter (or `key`) in the prompt, and return the id of the card that appears."""
    before = set(page.locator(".card").evaluate_all("cards => cards.map(c => c.dataset.id)"))
    page.get_by_label("Prompt", exact=True).fill(prompt)
    page.get_by_label("Steps").fill(steps)
    if size:
        page.locator(f"#size-options input[value='{size}']").check()
    if seconds:
        page.get_by_label("Duration").select_option(seconds)
    page.get_by_label("Prompt", exact=True).press(key)
    page.wait_for_function(
        "known => [...document.querySelectorAll('.card')].some(c => !known.includes(c.dataset.id))",
        arg=sorted(before),
        timeout=WAIT_MS,
    )
    ids = page.locator(".card").evaluate_all("cards => cards.map(c => c.dataset.id)")
    (new_id,) = [i for i in ids if i not in before]
    return new_id


def test_create_watch_play_download_cancel_delete(new_page, service, artifacts, page_errors):
    page = new_page()
    page.add_init_script(RECORD_PROGRESS)
    page.reload()
    requests = []
    page.on("request", lambda request: requests.append(request.url))
    page.screenshot(path=artifacts / "01-enter-key.png")

    enter_key(page, service.key)
    # The key is kept for the next visit.
    assert page.evaluate("localStorage.getItem('reel.apiKey')") == service.key
    page.screenshot(path=artifacts / "02-form.png")

    # 1. A job appears as a card at once and its progress bar follows the worker to 100.
    first = submit(page, "a red circle moving right on a blue background", steps="12")
    card = page.locator(f".card[data-id='{first}']")
    assert card_status(card) in ("queued", "in_progress", "completed")
    assert card.locator(".card-prompt").inner_text() == "a red circle moving right on a blue background"
    page.wait_for_function(
        "id => { const c = document.querySelector(`.card[data-id='${id}']`);"
        " return c.dataset.status === 'completed' || Number(c.dataset.progress) > 0; }",
        arg=first, timeout=WAIT_MS,
    )
    page.screenshot(path=artifacts / "03-in-progress.png")
    wait_status(page, first, "completed")
    seen = page.evaluate("id => window.__progress[id]", first)
    assert seen[-1] == 100
    assert any(0 < value < 100 for value in seen), f"no intermediate progress was shown: {seen}"
    assert seen == sorted(seen), f"progress went backwards: {seen}"
    # The bar was fed by the event stream: one stream, and at most the one confirming GET after it ended.
    assert sum(url.endswith(f"/v1/videos/{first}/events") for url in requests) == 1
    assert sum(url.endswith(f"/v1/videos/{first}") for url in requests) <= 1
    assert card.locator(".elapsed").inner_text().startswith("took ")

    # 2. The finished video plays inline: muted, looping, playsinline, from a blob fetched with the key.
    video = card.locator("video")
    video.wait_for()
    page.wait_for_function(
        "id => document.querySelector(`.card[data-id='${id}'] video`).readyState === 4", arg=first, timeout=WAIT_MS
    )
    start = video.evaluate("v => v.currentTime")
    page.wait_for_function(
        "([id, start]) => document.querySelector(`.card[data-id='${id}'] video`).currentTime !== start",
        arg=[first, start], timeout=WAIT_MS,
    )
    assert video.evaluate("v => [v.muted, v.loop, v.playsInline, v.src.startsWith('blob:')]") == [True, True, True, True]
    page.screenshot(path=artifacts / "04-completed.png")

    # 3. The three downloads are the API's own bytes.
    with service.client() as client:
        for button, variant in (("MP4", "video"), ("Thumbnail", "thumbnail"), ("Spritesheet", "spritesheet")):
            with page.expect_download() as download_info:
                card.get_by_role("button", name=button, exact=True).click()
            download = download_info.value
            expected = client.get(f"/v1/videos/{first}/content", params={"variant": variant})
            assert expected.status_code == 200
            assert open(download.path(), "rb").read() == expected.content
            assert download.suggested_filename.startswith(first)

    # 3b. "Use this seed" fixes the next video's seed; a remix keeps size, duration and seed.
    card.get_by_role("button", name="Use this seed").click()
    with service.client() as client:
        first_seed = client.get(f"/v1/videos/{first}").json()["seed"]
    assert page.get_by_label("Seed").input_value() == str(first_seed)
    page.get_by_label("Seed").fill("")
    card.get_by_label("Remix with a new prompt").fill("a red circle moving left on a blue background")
    card.get_by_role("button", name="Remix", exact=True).click()
    page.wait_for_function("n => document.querySelectorAll('.card').length === n", arg=2)
    remix = page.locator(".card").first
    remix_id = remix.get_attribute("data-id")
    assert remix_id != first
    assert f"remix of {first}" in remix.locator(".card-meta").inner_text()
    with service.client() as client:
        remixed = client.get(f"/v1/videos/{remix_id}").json()
    assert remixed["remixed_from_video_id"] == first
    assert remixed["seed"] == first_seed
    assert remixed["prompt"] == "a red circle moving left on a blue background"
    wait_status(page, remix_id, "completed")

    # 4. A long second job is cancelled from its card while it runs.
    second = submit(page, "a slow green square moving up on a white background", steps="100", seconds="4")
    wait_status(page, second, "in_progress")
    page.locator(f".card[data-id='{second}']").get_by_role("button", name="Cancel").click()
    wait_status(page, second, "cancelled")
    second_card = page.locator(f".card[data-id='{second}']")
    assert "cancelled" in second_card.locator(".status-text").inner_text().lower()
    assert second_card.locator("video").count() == 0
    with service.client() as client:
        assert client.get(f"/v1/videos/{second}").json()["status"] == "cancelled"
    page.screenshot(path=artifacts / "05-cancelled.png")

    # 5. The first video is deleted (after the browser's confirmation) from the page and from the API.
    assert page.locator(f".gallery-item[data-id='{first}']").count() == 1
    page.once("dialog", lambda dialog: dialog.accept())
    card.get_by_role("button", name="Delete this video").click()
    card.wait_for(state="detached")
    assert page.locator(f".gallery-item[data-id='{first}']").count() == 0
    with service.client() as client:
        assert client.get(f"/v1/videos/{first}").status_code == 404
    page.screenshot(path=artifacts / "06-deleted.png")
    assert page_errors == []


def test_wrong_key_is_refused_with_a_message(new_page, artifacts, page_errors):
    page = new_page()
    page.get_by_label("API key", exact=True).fill("reel_sk_this-key-does-not-exist")
    page.get_by_role("button", name="Save key").click()
    message = page.locator("#key-message")
    page.wait_for_function("() => document.querySelector('#key-message').textContent.includes('401')")
    assert "refused" in message.inner_text()
    assert page.get_by_label("API key", exact=True).get_attribute("aria-invalid") == "true"
    assert page.locator("#compose").is_hidden()
    assert page.evaluate("localStorage.getItem('reel.apiKey')") is None
    page.screenshot(path=artifacts / "07-wrong-key.png")
    assert page_errors == []


def test_validation_error_appears_beside_its_field(new_page, service, artifacts, page_errors):
    page = new_page(color_scheme="light")
    enter_key(page, service.key)
    with service.client() as client:
        before = len(client.get("/v1/videos", params={"limit": 100}).json()["data"])
    page.get_by_label("Prompt", exact=True).fill("a blue triangle")
    page.get_by_label("Steps").fill("500")
    page.get_by_label("Prompt", exact=True).press("Enter")
    error = page.locator("#steps-error")
    error.wait_for(state="visible")
    assert "steps" in error.inner_text()
    # Beside its field: in the same field group, and named by the input's description.
    assert error.evaluate("e => e.closest('.field') === document.querySelector('#steps').closest('.field')")
    steps = page.get_by_label("Steps")
    assert steps.get_attribute("aria-invalid") == "true"
    assert "steps-error" in steps.get_attribute("aria-describedby")
    assert page.evaluate("document.activeElement.id") == "steps"
    assert page.locator(".card").count() == 0
    with service.client() as client:
        assert len(client.get("/v1/videos", params={"limit": 100}).json()["data"]) == before
    page.screenshot(path=artifacts / "08-validation-error.png")

    # Typing in the field clears its error.
    steps.fill("4")
    assert error.is_hidden()

    # A custom size the API refuses: the message sits under the size choice, the width is marked.
    page.locator("#size-options label", has_text="Custom").click()
    page.get_by_label("Width").fill("100")
    page.get_by_label("Prompt", exact=True).press("Enter")
    size_error = page.locator("#size-error")
    size_error.wait_for(state="visible")
    assert "100x64" in size_error.inner_text()
    assert page.get_by_label("Width").get_attribute("aria-invalid") == "true"
    assert page.locator(".card").count() == 0
    page.screenshot(path=artifacts / "08-validation-error-size.png")
    assert page_errors == []


def test_library_scrolls_through_every_page(new_page, service, artifacts, page_errors):
    """More videos than one page: the list's cursors are followed as the end comes into view."""
    key = service.new_key("library")
    ids = []
    with service.client(key) as client:
        for n in range(15):
            job = client.post("/v1/videos", json={"prompt": f"library video {n}", "steps": 1}).json()
            client.post(f"/v1/videos/{job['id']}/cancel")
            ids.append(job["id"])
    # A short screen: the first page of the list fills it, the rest comes as the end scrolls into view.
    page = new_page(viewport={"width": 390, "height": 844})
    enter_key(page, key)
    page.wait_for_function("() => document.querySelectorAll('.gallery-item').length > 0 && "
                           "!document.querySelector('#load-more').hidden")
    assert page.locator(".gallery-item").count() == 12  # the page's page size
    page.screenshot(path=artifacts / "09-library-first-page.png")
    page.locator("#load-more").scroll_into_view_if_needed()
    page.wait_for_function(f"() => document.querySelectorAll('.gallery-item').length === {len(ids)}")
    shown = page.locator(".gallery-item").evaluate_all("items => items.map(i => i.dataset.id)")
    assert shown == list(reversed(ids))  # newest first, each once
    assert page.locator("#load-more").is_hidden()
    page.screenshot(path=artifacts / "10-library-all.png", full_page=True)

    # A tile opens its video as a card.
    page.locator(".gallery-item .tile").first.click()
    opened = page.locator(f".card[data-id='{ids[-1]}']")
    opened.wait_for()
    assert page.evaluate("document.activeElement.dataset.id") == ids[-1]
    assert page_errors == []


def test_phone_width(new_page, service, artifacts, page_errors):
    page = new_page(viewport={"width": 390, "height": 844})
    enter_key(page, service.key)
    video_id = submit(page, "a yellow circle bouncing on a black background", steps="2")
    wait_status(page, video_id, "completed")
    page.locator(f".card[data-id='{video_id}'] video").wait_for()
    # Nothing is wider than the screen, and the controls stay reachable.
    assert page.evaluate("document.documentElement.scrollWidth") <= 390
    for selector in ("#prompt", "#create-button", f".card[data-id='{video_id}']", "#size-options"):
        box = page.locator(selector).bounding_box()
        assert box["x"] >= 0 and box["x"] + box["width"] <= 390, selector
    page.screenshot(path=artifacts / "11-phone.png", full_page=True)
    assert page_errors == []


def test_progress_without_the_event_stream(new_page, service, artifacts, page_errors):
    """A proxy that breaks streaming responses: the card falls back to polling and still finishes."""
    page = new_page()
    page.route("**/events", lambda route: route.abort())
    enter_key(page, service.key)
    video_id = submit(page, "a purple square shrinking on a grey background", steps="3", key="Control+Enter")
    wait_status(page, video_id, "completed")
    page.locator(f".card[data-id='{video_id}'] video").wait_for()
    page.screenshot(path=artifacts / "13-polling-fallback.png")
    assert page_errors == []


@pytest.fixture
def keyboard_page(new_page, service):
    page = new_page()
    enter_key(page, service.key)
    return page


def test_keyboard_only(keyboard_page, artifacts, page_errors):
    """Tab reaches the form's controls in reading order and shows where the focus is."""
    page = keyboard_page
    # A fresh visit with the key remembered: sequential focus starts at the top of the document.
    page.reload()
    page.locator("#compose").wait_for(state="visible")
    order = []
    for _ in range(14):
        page.keyboard.press("Tab")
        order.append(page.evaluate("(() => { const e = document.activeElement; return e.id || e.name || e.className; })()"))
    # The skip link first, the header's key button, then the prompt and the size choice.
    assert order[0] == "skip-link"
    assert order.index("prompt") < order.index("size") < order.index("seconds") < order.index("seed") < order.index("steps")
    page.get_by_label("Prompt", exact=True).focus()
    outline = page.evaluate("getComputedStyle(document.activeElement).outlineStyle")
    assert outline != "none"
    # A button reached by Tab shows its focus too.
    page.get_by_label("Negative prompt").focus()
    page.keyboard.press("Tab")
    assert page.evaluate("document.activeElement.id") == "create-button"
    assert page.evaluate("getComputedStyle(document.activeElement).outlineStyle") != "none"
    page.get_by_label("Prompt", exact=True).focus()
    # Shift+Enter is a new line, not a submission.
    page.keyboard.type("first line")
    page.keyboard.press("Shift+Enter")
    page.keyboard.type("second line")
    assert page.get_by_label("Prompt", exact=True).input_value() == "first line\nsecond line"
    assert page.locator(".card").count() == 0
    page.screenshot(path=artifacts / "12-keyboard.png")
    assert page_errors == []


def test_full_queue_says_when_to_retry(new_page, service, artifacts, page_errors):
    """429 with Retry-After: the page says when to try again and holds the button until then."""
    key = service.new_key("busy")
    made = []
    with service.client(key) as client:
        try:
            # One long job occupies the worker; then the tenant's queue (limit 3 here) fills up.
            running = client.post("/v1/videos", json={"prompt": "a long job", "size": "128x128", "seconds": 4,
                                                      "steps": 100}).json()
            made.append(running["id"])
            for _ in range(600):
                if client.get(f"/v1/videos/{running['id']}").json()["status"] != "queued":
                    break
                time.sleep(0.1)
            while True:
                answer = client.post("/v1/videos", json={"prompt": "waiting", "steps": 1})
                if answer.status_code == 429:
                    break
                assert answer.status_code == 200, answer.text
                made.append(answer.json()["id"])
            assert answer.headers["Retry-After"] == "30"

            page = new_page()
            enter_key(page, key)
            page.get_by_label("Prompt", exact=True).fill("one more")
            page.get_by_label("Prompt", exact=True).press("Enter")
            message = page.locator("#form-message")
            message.wait_for(state="visible")
            assert "Try again in 30 seconds" in message.inner_text()
            button = page.locator("#create-button")
            assert button.is_disabled()
            assert button.inner_text().startswith("Try again in")
            assert page.locator(".card").count() == 0
            page.screenshot(path=artifacts / "14-queue-full.png")

            # A waiting job opened from the library shows its place in the queue, and cancels at once.
            waiting = made[-1]
            page.locator(f".gallery-item[data-id='{waiting}'] .tile").click()
            card = page.locator(f".card[data-id='{waiting}']")
            card.wait_for()
            assert card_status(card) == "queued"
            assert re.fullmatch(r"Position [1-3] in the queue", card.locator(".status-text").inner_text())
            page.screenshot(path=artifacts / "15-queued.png")
            card.get_by_role("button", name="Cancel").click()
            wait_status(page, waiting, "cancelled")
            assert client.get(f"/v1/videos/{waiting}").json()["status"] == "cancelled"
        finally:
            for video_id in made:
                client.post(f"/v1/videos/{video_id}/cancel")
    assert page_errors == []


def test_a_failed_job_shows_its_error(new_page, service, artifacts, page_errors):
    """A job whose worker gave up (here the store's own transitions stand in for it) says why on its card."""
    import redis

    from app.jobs import Job, JobStore, new_id
    from app.settings import Settings

    key = service.new_key("failures")
    client = redis.Redis.from_url(service.redis_url)
    try:
        store = JobStore(client, Settings(redis_url=service.redis_url))
        job = Job(id=new_id("video"), tenant="failures", model="tiny", prompt="a job that cannot finish",
                  width=64, height=64, seconds=2, fps=8, frames=17, seed=1, steps=2, guidance=4.0,
                  created_at=int(time.time()))
        store.create(job)  # no task is sent: no worker takes it
        assert store.start(job.id, "a-worker-that-gives-up")
        assert store.fail(job.id, "deadline_exceeded", "the job ran past its 900 s deadline")
    finally:
        client.close()

    page = new_page()
    enter_key(page, key)
    tile = page.locator(f".gallery-item[data-id='{job.id}'] .tile")
    tile.wait_for(timeout=WAIT_MS)
    assert "failed" in page.locator(f".gallery-item[data-id='{job.id}']").inner_text().lower()
    tile.click()
    card = page.locator(f".card[data-id='{job.id}']")
    card.wait_for()
    assert card_status(card) == "failed"
    error = card.locator(".card-error")
    assert error.is_visible()
    assert error.inner_text() == "the job ran past its 900 s deadline (deadline_exceeded)"
    assert card.locator("video").count() == 0 and card.locator(".cancel").is_hidden()
    page.screenshot(path=artifacts / "15-failed-job.png")
    assert page_errors == []


def test_library_tiles_show_thumbnails_of_finished_videos(new_page, service, artifacts, page_errors):
    key = service.new_key("thumbnails")
    with service.client(key) as client:
        ids = [client.post("/v1/videos", json={"prompt": f"a green square moving up {n}", "steps": 1}).json()["id"]
               for n in range(2)]
        for video_id in ids:
            wait_until(lambda: client.get(f"/v1/videos/{video_id}").json()["status"] == "completed",
                       timeout=WAIT_MS / 1000, interval=0.1, what=f"{video_id} to complete")
    page = new_page()
    enter_key(page, key)
    for video_id in ids:
        # The tile's thumbnail is the API's WebP, decoded by the browser (naturalWidth > 0).
        page.wait_for_function(
            "id => { const img = document.querySelector(`.gallery-item[data-id='${id}'] .tile-thumb img`);"
            " return img && img.complete && img.naturalWidth > 0; }",
            arg=video_id, timeout=WAIT_MS,
        )
    page.screenshot(path=artifacts / "16-library-thumbnails.png")
    assert page_errors == []
