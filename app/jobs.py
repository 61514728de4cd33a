"""The job record and its Redis store.

This is the only module that knows Redis key names. The API and the worker both go
through `JobStore`; every state change that must not race (creating under the queue
limits, start, progress, cancel, completion, deletion) is one Lua script, so that two
API processes or a redelivered task can never see half a transition.

Keys (all under `reel:`):
  job:{id}                  hash, the job record (strings; JSON for nested fields)
  job:{id}:events           stream of {type, job} snapshots, replayed by SSE subscribers
  tenant:{t}:jobs           sorted set of the tenant's job ids, all score 0: ids are
                            time-sortable, so lexicographic order is creation order and
                            an id is itself the pagination cursor
  queue                     sorted set of queued job ids by creation time (position = rank + 1)
  tenant:{t}:queue          the tenant's queued ids (for the per-tenant limit)
  idempotency:{t}:{sha256}  "job_id request_hash", 24 h
  expiry                    sorted set of completed job ids by expires_at
  stats:jobs                hash status -> number of job records in that status
  workers / worker:{id}     heartbeats (sorted set by last seen, and the info with a TTL)
  metrics:hist:{name}       histogram buckets written by any process, exported by the API
  metrics:counter:{name}    counters by label value
  webhooks:due              webhook retries by due time
  apikey:{sha256} / apikey_ids / tenant:{t}   API keys (hashed) and tenants
"""

from __future__ import annotations

import hashlib
import json
import os
import threading
import time
from dataclasses import dataclass, field
from typing import Any

import redis

FINAL_STATUSES = ("completed", "failed", "cancelled")
ACTIVE_STATUSES = ("queued", "in_progress")

# Crockford's base32 (no I, L, O, U), lower-case; its order matches the numeric order.
_ALPHABET = "0123456789abcdefghjkmnpqrstvwxyz"
_id_lock = threading.Lock()
_last_id_state = [0, 0]  # (milliseconds, random part) of the last id made in this process


def new_id(prefix: str) -> str:
    """`prefix_` + 26 characters: a ULID (48-bit milliseconds, 80 random bits).

    Monotonic within a process: ids made in the same millisecond increment the random
    part, so the ids of one process sort in the order they were made.
    """
    with _id_lock:
        now_ms = int(time.time() * 1000)
        last_ms, last_random = _last_id_state
        if now_ms <= last_ms:
            now_ms, random_part = last_ms, (last_random + 1) % (1 << 80)
        else:
            random_part = int.from_bytes(os.urandom(10), "big")
        _last_id_state[:] = [now_ms, random_part]
    value = (now_ms << 80) | random_part
    chars = []
    for _ in range(26):
        chars.append(_ALPHABET[value & 31])
        value >>= 5
    return f"{prefix}_{''.join(reversed(chars))}"


def is_id(value: str, prefix: str) -> bool:
    head, _, body = value.partition("_")
    return head == prefix and len(body) == 26 and all(c in _ALPHABET for c in body)


@dataclass
class Job:
    """One job as stored. `Video.from_job` turns it into the public object."""

    id: str
    tenant: str
    model: str
    prompt: str
    width: int
    height: int
    seconds: int
    fps: int
    frames: int
    seed: int
    steps: int
    guidance: float
    created_at: int
    status: str = "queued"
    progress: int = 0
    negative_prompt: str | None = None
    started_at: int | None = None
    completed_at: int | None = None
    expires_at: int | None = None
    error: dict | None = None  # {"code", "message"}
    remixed_from_video_id: str | None = None
    metadata: dict[str, str] = field(default_factory=dict)
    webhook_url: str | None = None
    webhook_events: list[str] = field(default_factory=list)
    assets: dict[str, dict] = field(default_factory=dict)  # variant -> {key, content_type, size, etag}
    cancel_requested: bool = False
    worker_id: str | None = None
    attempts: int = 0

    _INTS = ("width", "height", "seconds", "fps", "frames", "seed", "steps", "created_at", "progress", "attempts")
    _OPTIONAL_INTS = ("started_at", "completed_at", "expires_at")
    _OPTIONAL_STRS = ("negative_prompt", "remixed_from_video_id", "webhook_url", "worker_id")
    _JSON = ("error", "metadata", "webhook_events", "assets")

    @property
    def size(self) -> str:
        return f"{self.width}x{self.height}"

    @property
    def is_final(self) -> bool:
        return self.status in FINAL_STATUSES

    def to_hash(self) -> dict[str, str]:
        flat: dict[str, str] = {}
        for name in self.__dataclass_fields__:
            value = getattr(self, name)
            if name in self._JSON:
                flat[name] = json.dumps(value)
            elif name == "cancel_requested":
                flat[name] = "1" if value else "0"
            elif value is None:
                flat[name] = ""
            else:
                flat[name] = str(value)
        return flat

    @classmethod
    def from_hash(cls, flat: dict) -> "Job":
        data = {(k.decode() if isinstance(k, bytes) else k): (v.decode() if isinstance(v, bytes) else v) for k, v in flat.items()}
        values: dict[str, Any] = {}
        for name in cls.__dataclass_fields__:
            if name not in data:
                continue
            raw = data[name]
            if name in cls._INTS:
                values[name] = int(raw)
            elif name in cls._OPTIONAL_INTS:
                values[name] = int(raw) if raw != "" else None
            elif name in cls._OPTIONAL_STRS:
                values[name] = raw if raw != "" else None
            elif name in cls._JSON:
                values[name] = json.loads(raw) if raw else None
            elif name == "guidance":
                values[name] = float(raw)
            elif name == "cancel_requested":
                values[name] = raw == "1"
            else:
                values[name] = raw
        for name in ("metadata", "assets"):
            if values.get(name) is None:
                values[name] = {}
        if values.get("webhook_events") is None:
            values["webhook_events"] = []
        return cls(**values)


# Shared Lua: a JSON snapshot of the record, appended to its event stream with the event type.
_LUA_PRELUDE = """
local function publish(job_key, events_key, event_type, maxlen)
  local flat = redis.call('HGETALL', job_key)
  local record = {}
  for i = 1, #flat, 2 do record[flat[i]] = flat[i + 1] end
  redis.call('XADD', events_key, 'MAXLEN', '~', maxlen, '*', 'type', event_type, 'job', cjson.encode(record))
end
local function count_status(stats_key, from_status, to_status)
  if from_status then redis.call('HINCRBY', stats_key, from_status, -1) end
  if to_status then redis.call('HINCRBY', stats_key, to_status, 1) end
end
"""

# KEYS: job, tenant_jobs, queue, tenant_queue, events, idempotency, stats
# ARGV: job_id, has_idempotency, idempotency_value, idempotency_ttl, max_queued, max_queued_per_tenant,
#       queue_score, events_maxlen, field1, value1, ...
_CREATE = _LUA_PRELUDE + """
if ARGV[2] == '1' then
  local existing = redis.call('GET', KEYS[6])
  if existing then return {'existing', existing} end
end
if redis.call('ZCARD', KEYS[3]) >= tonumber(ARGV[5]) then return {'queue_full', 'overall'} end
if redis.call('ZCARD', KEYS[4]) >= tonumber(ARGV[6]) then return {'queue_full', 'tenant'} end
local fields = {}
for i = 9, #ARGV do fields[#fields + 1] = ARGV[i] end
redis.call('HSET', KEYS[1], unpack(fields))
redis.call('ZADD', KEYS[2], 0, ARGV[1])
redis.call('ZADD', KEYS[3], ARGV[7], ARGV[1])
redis.call('ZADD', KEYS[4], ARGV[7], ARGV[1])
if ARGV[2] == '1' then redis.call('SET', KEYS[6], ARGV[3], 'EX', ARGV[4]) end
count_status(KEYS[7], nil, 'queued')
publish(KEYS[1], KEYS[5], 'video.queued', ARGV[8])
return {'created', ARGV[1]}
"""

# KEYS: job, queue, tenant_queue, events, stats   ARGV: job_id, worker_id, now, events_maxlen
_START = _LUA_PRELUDE + """
local status = redis.call('HGET', KEYS[1], 'status')
if status == 'queued' then
  redis.call('HSET', KEYS[1], 'status', 'in_progress', 'started_at', ARGV[3], 'worker_id', ARGV[2], 'progress', '0')
  redis.call('HINCRBY', KEYS[1], 'attempts', 1)
  redis.call('ZREM', KEYS[2], ARGV[1])
  redis.call('ZREM', KEYS[3], ARGV[1])
  count_status(KEYS[5], 'queued', 'in_progress')
  publish(KEYS[1], KEYS[4], 'video.started', ARGV[4])
  return 1
elseif status == 'in_progress' then
  -- a redelivered task: the earlier attempt died; start over
  redis.call('HSET', KEYS[1], 'worker_id', ARGV[2], 'progress', '0')
  redis.call('HINCRBY', KEYS[1], 'attempts', 1)
  return 1
end
return 0
"""

# KEYS: job, events   ARGV: progress, events_maxlen
_PROGRESS = _LUA_PRELUDE + """
local status = redis.call('HGET', KEYS[1], 'status')
if status ~= 'in_progress' then return 1 end
if redis.call('HGET', KEYS[1], 'progress') ~= ARGV[1] then
  redis.call('HSET', KEYS[1], 'progress', ARGV[1])
  publish(KEYS[1], KEYS[2], 'video.progress', ARGV[2])
end
if redis.call('HGET', KEYS[1], 'cancel_requested') == '1' then return 1 end
return 0
"""

# Moves a queued or running job to a final status.
# KEYS: job, queue, tenant_queue, events, stats, expiry
# ARGV: job_id, final_status, event_type, events_maxlen, events_ttl, expires_at ('' for none),
#       from_statuses (comma-separated), field1, value1, ...
_FINISH = _LUA_PRELUDE + """
local status = redis.call('HGET', KEYS[1], 'status')
if not status or not string.find(',' .. ARGV[7] .. ',', ',' .. status .. ',', 1, true) then return 0 end
local fields = {'status', ARGV[2]}
for i = 8, #ARGV do fields[#fields + 1] = ARGV[i] end
redis.call('HSET', KEYS[1], unpack(fields))
redis.call('ZREM', KEYS[2], ARGV[1])
redis.call('ZREM', KEYS[3], ARGV[1])
if ARGV[6] ~= '' then redis.call('ZADD', KEYS[6], ARGV[6], ARGV[1]) end
count_status(KEYS[5], status, ARGV[2])
publish(KEYS[1], KEYS[4], ARGV[3], ARGV[4])
redis.call('EXPIRE', KEYS[4], ARGV[5])
return 1
"""

# KEYS: job   ARGV: none. Queued jobs are finished by _FINISH; running ones get the flag.
_REQUEST_CANCEL = """
local status = redis.call('HGET', KEYS[1], 'status')
if status == 'in_progress' then
  redis.call('HSET', KEYS[1], 'cancel_requested', '1')
  return 'requested'
end
return status or 'missing'
"""

# KEYS: job, tenant_jobs, events, expiry, stats   ARGV: job_id
_DELETE = """
local status = redis.call('HGET', KEYS[1], 'status')
if not status then return 'missing' end
if status == 'queued' or status == 'in_progress' then return 'running' end
redis.call('DEL', KEYS[1], KEYS[3])
redis.call('ZREM', KEYS[2], ARGV[1])
redis.call('ZREM', KEYS[4], ARGV[1])
redis.call('HINCRBY', KEYS[5], status, -1)
return 'deleted'
"""

# KEYS: due   ARGV: now, limit. Pops the webhook retries that are due.
_POP_DUE = """
local due = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], 'LIMIT', 0, ARGV[2])
if #due > 0 then redis.call('ZREM', KEYS[1], unpack(due)) end
return due
"""


class QueueFull(Exception):
    """The overall or the tenant's queue limit is reached (`scope` says which)."""

    def __init__(self, scope: str):
        super().__init__(f"the {scope} queue is full")
        self.scope = scope


@dataclass
class Created:
    job: Job
    created: bool  # False: an earlier request with the same idempotency key made `job`
    request_hash_matches: bool = True


class JobStore:
    """Jobs, queue, events, idempotency keys, heartbeats, API keys and shared metrics in Redis."""

    EVENTS_MAXLEN = 1000

    def __init__(self, client: redis.Redis, settings, async_client=None):
        self.redis = client
        self.async_redis = async_client  # redis.asyncio client, for SSE and `Prefer: wait`
        self.settings = settings
        self._create = client.register_script(_CREATE)
        self._start = client.register_script(_START)
        self._progress = client.register_script(_PROGRESS)
        self._finish = client.register_script(_FINISH)
        self._request_cancel = client.register_script(_REQUEST_CANCEL)
        self._delete = client.register_script(_DELETE)
        self._pop_due = client.register_script(_POP_DUE)

    # --- key names -------------------------------------------------------------------------
    @staticmethod
    def _job_key(job_id: str) -> str:
        return f"reel:job:{job_id}"

    @staticmethod
    def _events_key(job_id: str) -> str:
        return f"reel:job:{job_id}:events"

    @staticmethod
    def _tenant_jobs_key(tenant: str) -> str:
        return f"reel:tenant:{tenant}:jobs"

    @staticmethod
    def _tenant_queue_key(tenant: str) -> str:
        return f"reel:tenant:{tenant}:queue"

    _QUEUE = "reel:queue"
    _EXPIRY = "reel:expiry"
    _STATS = "reel:stats:jobs"
    _WORKERS = "reel:workers"
    _WEBHOOKS_DUE = "reel:webhooks:due"
    _API_KEY_IDS = "reel:apikey_ids"

    @staticmethod
    def _idempotency_key(tenant: str, key: str) -> str:
        return f"reel:idempotency:{tenant}:{hashlib.sha256(key.encode()).hexdigest()}"

    # --- jobs ------------------------------------------------------------------------------
    def ping(self) -> bool:
        return bool(self.redis.ping())

    def create(self, job: Job, idempotency_key: str | None = None, request_hash: str = "") -> Created:
        """Store a new queued job, unless the queue is full or the idempotency key was used.

        Raises QueueFull. With a used idempotency key returns the earlier job with
        `created=False` and whether the earlier request's body hash was the same.
        """
        flat = job.to_hash()
        args: list = [
            job.id,
            "1" if idempotency_key else "0",
            f"{job.id} {request_hash}",
            self.settings.idempotency_ttl_seconds,
            self.settings.max_queued,
            self.settings.max_queued_per_tenant,
            int(time.time() * 1000),
            self.EVENTS_MAXLEN,
        ]
        for name, value in flat.items():
            args += [name, value]
        keys = [
            self._job_key(job.id),
            self._tenant_jobs_key(job.tenant),
            self._QUEUE,
            self._tenant_queue_key(job.tenant),
            self._events_key(job.id),
            self._idempotency_key(job.tenant, idempotency_key or ""),
            self._STATS,
        ]
        outcome, value = (part.decode() if isinstance(part, bytes) else part for part in self._create(keys=keys, args=args))
        if outcome == "queue_full":
            raise QueueFull(value)
        if outcome == "existing":
            earlier_id, _, earlier_hash = value.partition(" ")
            earlier = self.get(earlier_id)
            if earlier is None:
                # The earlier job was deleted since; the key is spent, the new request is new.
                self.redis.delete(self._idempotency_key(job.tenant, idempotency_key or ""))
                return self.create(job, idempotency_key, request_hash)
            return Created(earlier, created=False, request_hash_matches=earlier_hash == request_hash)
        return Created(job, created=True)

    def discard(self, job_id: str, idempotency_key: str | None = None) -> None:
        """Undo a create whose task could not be sent (the broker was unreachable)."""
        job = self.get(job_id)
        if job is None:
            return
        pipe = self.redis.pipeline()
        pipe.delete(self._job_key(job_id), self._events_key(job_id))
        pipe.zrem(self._tenant_jobs_key(job.tenant), job_id)
        pipe.zrem(self._QUEUE, job_id)
        pipe.zrem(self._tenant_queue_key(job.tenant), job_id)
        pipe.hincrby(self._STATS, job.status, -1)
        if idempotency_key:
            pipe.delete(self._idempotency_key(job.tenant, idempotency_key))
        pipe.execute()

    def get(self, job_id: str) -> Job | None:
        flat = self.redis.hgetall(self._job_key(job_id))
        return Job.from_hash(flat) if flat else None

    def queue_position(self, job_id: str) -> int | None:
        rank = self.redis.zrank(self._QUEUE, job_id)
        return None if rank is None else rank + 1

    def queue_positions(self, job_ids: list[str]) -> dict[str, int | None]:
        pipe = self.redis.pipeline()
        for job_id in job_ids:
            pipe.zrank(self._QUEUE, job_id)
        return {job_id: (None if rank is None else rank + 1) for job_id, rank in zip(job_ids, pipe.execute())}

    def queue_depth(self) -> int:
        return self.redis.zcard(self._QUEUE)

    def status_counts(self) -> dict[str, int]:
        raw = self.redis.hgetall(self._STATS)
        return {k.decode(): int(v) for k, v in raw.items()}

    def list(self, tenant: str, limit: int = 20, after: str | None = None, order: str = "desc",
             status: str | None = None) -> tuple[list[Job], bool]:
        """The tenant's jobs after the cursor `after`, newest first for `desc`; returns (jobs, has_more)."""
        key = self._tenant_jobs_key(tenant)
        chunk = max(limit + 1, 50) if status else limit + 1
        found: list[Job] = []
        cursor = after
        while True:
            if order == "desc":
                ids = self.redis.zrevrangebylex(key, f"({cursor}" if cursor else "+", "-", start=0, num=chunk)
            else:
                ids = self.redis.zrangebylex(key, f"({cursor}" if cursor else "-", "+", start=0, num=chunk)
            ids = [i.decode() for i in ids]
            if not ids:
                return found, False
            pipe = self.redis.pipeline()
            for job_id in ids:
                pipe.hgetall(self._job_key(job_id))
            for flat in pipe.execute():
                if not flat:
                    continue  # deleted between the two reads
                job = Job.from_hash(flat)
                if status and job.status != status:
                    continue
                if len(found) == limit:
                    return found, True
                found.append(job)
            if len(ids) < chunk:
                return found, False
            cursor = ids[-1]

    def start(self, job_id: str, worker_id: str) -> bool:
        """queued -> in_progress. True when the worker should run the job (also for a
        redelivered job already in progress); False when it is cancelled, finished or gone."""
        job = self.get(job_id)
        if job is None:
            return False
        keys = [self._job_key(job_id), self._QUEUE, self._tenant_queue_key(job.tenant), self._events_key(job_id), self._STATS]
        return bool(self._start(keys=keys, args=[job_id, worker_id, int(time.time()), self.EVENTS_MAXLEN]))

    def set_progress(self, job_id: str, progress: int) -> bool:
        """Record progress (0-100) and publish it. Returns True when the worker should stop:
        a cancel was requested, or the job is no longer in progress."""
        progress = max(0, min(100, int(progress)))
        return bool(self._progress(keys=[self._job_key(job_id), self._events_key(job_id)], args=[progress, self.EVENTS_MAXLEN]))

    def is_cancel_requested(self, job_id: str) -> bool:
        flag, status = self.redis.hmget(self._job_key(job_id), "cancel_requested", "status")
        return flag == b"1" or status == b"cancelled" or status is None

    def _finish_job(self, job: Job, status: str, event_type: str, fields: dict, expires_at: int | None = None,
                    from_statuses: tuple[str, ...] = ACTIVE_STATUSES) -> bool:
        keys = [self._job_key(job.id), self._QUEUE, self._tenant_queue_key(job.tenant), self._events_key(job.id),
                self._STATS, self._EXPIRY]
        args: list = [job.id, status, event_type, self.EVENTS_MAXLEN, self.settings.events_ttl_seconds,
                      "" if expires_at is None else expires_at, ",".join(from_statuses)]
        for name, value in fields.items():
            args += [name, value]
        return bool(self._finish(keys=keys, args=args))

    def complete(self, job_id: str, assets: dict[str, dict], now: float | None = None) -> bool:
        """in_progress -> completed with the stored assets (variant -> {key, content_type, size, etag}).
        False when the job was cancelled, already finished or is gone (the caller should then
        delete what it stored if the job is cancelled)."""
        job = self.get(job_id)
        if job is None:
            return False
        now_s = int(now if now is not None else time.time())
        expires_at = now_s + self.settings.asset_ttl_seconds
        done = self._finish_job(job, "completed", "video.completed", {
            "progress": "100", "completed_at": str(now_s), "expires_at": str(expires_at),
            "assets": json.dumps(assets), "cancel_requested": "0",
        }, expires_at=expires_at)
        if done:
            from app.metrics import JOB_LATENCY_BUCKETS

            # Latency from the client's point of view, and the part of it spent generating.
            self.observe("job_latency_seconds", now_s - job.created_at, JOB_LATENCY_BUCKETS)
            if job.started_at is not None:
                self.observe("job_run_seconds", now_s - job.started_at, JOB_LATENCY_BUCKETS)
        return done

    def fail(self, job_id: str, code: str, message: str, now: float | None = None) -> bool:
        """queued or in_progress -> failed with {code, message}."""
        job = self.get(job_id)
        if job is None:
            return False
        now_s = int(now if now is not None else time.time())
        return self._finish_job(job, "failed", "video.failed", {
            "completed_at": str(now_s), "error": json.dumps({"code": code, "message": message}),
        })

    def mark_cancelled(self, job_id: str, now: float | None = None) -> bool:
        """queued or in_progress -> cancelled (the worker calls this when it stops on the flag)."""
        job = self.get(job_id)
        if job is None:
            return False
        now_s = int(now if now is not None else time.time())
        return self._finish_job(job, "cancelled", "video.cancelled", {"completed_at": str(now_s)})

    def request_cancel(self, job_id: str) -> str:
        """The API's cancel: a queued job is cancelled at once ('cancelled'); a running one
        gets the flag its worker reads at every step ('requested'); otherwise returns the
        job's final status, or 'missing'."""
        job = self.get(job_id)
        if job is None:
            return "missing"
        if self._finish_job(job, "cancelled", "video.cancelled", {"completed_at": str(int(time.time()))},
                            from_statuses=("queued",)):
            return "cancelled"
        return self._request_cancel(keys=[self._job_key(job_id)]).decode()

    def delete(self, job_id: str) -> str:
        """Delete a finished job's record and history: 'deleted', 'running' or 'missing'.
        The caller deletes the stored assets first."""
        job = self.get(job_id)
        if job is None:
            return "missing"
        keys = [self._job_key(job_id), self._tenant_jobs_key(job.tenant), self._events_key(job_id), self._EXPIRY, self._STATS]
        return self._delete(keys=keys, args=[job_id]).decode()

    def expired_jobs(self, now: float | None = None, limit: int = 500) -> list[str]:
        """Completed jobs whose assets have expired (for the sweeper)."""
        now_s = now if now is not None else time.time()
        return [i.decode() for i in self.redis.zrangebyscore(self._EXPIRY, "-inf", now_s, start=0, num=limit)]

    def mark_expired(self, job_id: str) -> None:
        """The sweeper deleted the assets: forget them (the record stays, content answers 404)."""
        pipe = self.redis.pipeline()
        pipe.zrem(self._EXPIRY, job_id)
        if self.redis.exists(self._job_key(job_id)):
            pipe.hset(self._job_key(job_id), "assets", "{}")
        pipe.execute()

    # --- events (SSE, Prefer: wait) ---------------------------------------------------------
    @staticmethod
    def _parse_events(entries) -> list[tuple[str, str, Job]]:
        parsed = []
        for entry_id, fields in entries:
            fields = {k.decode() if isinstance(k, bytes) else k: v.decode() if isinstance(v, bytes) else v for k, v in fields.items()}
            parsed.append((entry_id.decode() if isinstance(entry_id, bytes) else entry_id, fields["type"],
                           Job.from_hash(json.loads(fields["job"]))))
        return parsed

    def events(self, job_id: str, after: str = "0") -> list[tuple[str, str, Job]]:
        """The job's history after the stream id `after`: (event id, type, job snapshot)."""
        return self._parse_events(self.redis.xrange(self._events_key(job_id), min=f"({after}" if after != "0" else "-"))

    async def wait_events(self, job_id: str, after: str = "0", block_ms: int = 15000) -> list[tuple[str, str, Job]]:
        """Events after `after`, waiting up to `block_ms` for new ones (async client)."""
        reply = await self.async_redis.xread({self._events_key(job_id): after}, block=block_ms, count=100)
        if not reply:
            return []
        _, entries = reply[0]
        return self._parse_events(entries)

    async def aget(self, job_id: str) -> Job | None:
        flat = await self.async_redis.hgetall(self._job_key(job_id))
        return Job.from_hash(flat) if flat else None

    # --- workers ---------------------------------------------------------------------------
    def heartbeat(self, worker_id: str, info: dict) -> None:
        """A worker is alive; `info` says what it serves: {"model": str, "model_loaded": bool,
        "sizes": ["64x64", ...] or [[64, 64], ...], "max_side": int, "seconds": [0, 1, 2, 4],
        "fps": int, "default_steps": int, "default_guidance": float}. The API lists these in
        /v1/models, refuses sizes and durations outside `max_side`/`seconds`, and /readyz
        needs one worker with model_loaded."""
        now = time.time()
        ttl = self.settings.worker_heartbeat_ttl_seconds
        pipe = self.redis.pipeline()
        pipe.set(f"reel:worker:{worker_id}", json.dumps({**info, "worker_id": worker_id, "seen_at": now}), ex=ttl)
        pipe.zadd(self._WORKERS, {worker_id: now})
        pipe.zremrangebyscore(self._WORKERS, "-inf", now - ttl)
        pipe.execute()

    def workers(self) -> list[dict]:
        """Workers heard from within the heartbeat TTL, each its last info."""
        now = time.time()
        ids = [i.decode() for i in self.redis.zrangebyscore(self._WORKERS, now - self.settings.worker_heartbeat_ttl_seconds, "+inf")]
        if not ids:
            return []
        infos = self.redis.mget([f"reel:worker:{i}" for i in ids])
        return [json.loads(info) for info in infos if info]

    # --- metrics shared between processes ---------------------------------------------------
    def observe(self, name: str, value: float, buckets: tuple[float, ...]) -> None:
        """Add one observation to a histogram kept in Redis (any process may write)."""
        bucket = next((str(b) for b in buckets if value <= b), "+Inf")
        pipe = self.redis.pipeline()
        pipe.hincrby(f"reel:metrics:hist:{name}", bucket, 1)
        pipe.hincrbyfloat(f"reel:metrics:hist:{name}", "sum", value)
        pipe.execute()

    def histogram(self, name: str) -> dict[str, float]:
        return {k.decode(): float(v) for k, v in self.redis.hgetall(f"reel:metrics:hist:{name}").items()}

    def increment(self, name: str, label: str, amount: int = 1) -> None:
        self.redis.hincrby(f"reel:metrics:counter:{name}", label, amount)

    def counter(self, name: str) -> dict[str, int]:
        return {k.decode(): int(v) for k, v in self.redis.hgetall(f"reel:metrics:counter:{name}").items()}

    # --- webhook retries --------------------------------------------------------------------
    def schedule_webhook(self, message: dict, due_at: float) -> None:
        self.redis.zadd(self._WEBHOOKS_DUE, {json.dumps(message, sort_keys=True): due_at})

    def pop_due_webhooks(self, now: float | None = None, limit: int = 100) -> list[dict]:
        due = self._pop_due(keys=[self._WEBHOOKS_DUE], args=[now if now is not None else time.time(), limit])
        return [json.loads(item) for item in due]

    def scheduled_webhooks(self) -> list[tuple[dict, float]]:
        return [(json.loads(m), s) for m, s in self.redis.zrange(self._WEBHOOKS_DUE, 0, -1, withscores=True)]

    # --- API keys and tenants ---------------------------------------------------------------
    def add_api_key(self, key_hash: str, key_id: str, tenant: str, name: str) -> None:
        pipe = self.redis.pipeline()
        pipe.hset(f"reel:apikey:{key_hash}", mapping={"id": key_id, "tenant": tenant, "name": name,
                                                     "created_at": int(time.time()), "revoked": "0"})
        pipe.hset(self._API_KEY_IDS, key_id, key_hash)
        pipe.execute()

    def api_key(self, key_hash: str) -> dict | None:
        record = self.redis.hgetall(f"reel:apikey:{key_hash}")
        return {k.decode(): v.decode() for k, v in record.items()} if record else None

    def api_keys(self) -> list[dict]:
        hashes = self.redis.hgetall(self._API_KEY_IDS)
        records = [self.api_key(h.decode()) for h in hashes.values()]
        return sorted((r for r in records if r), key=lambda r: (int(r["created_at"]), r["id"]))

    def revoke_api_key(self, key_id: str) -> bool:
        key_hash = self.redis.hget(self._API_KEY_IDS, key_id)
        if key_hash is None:
            return False
        self.redis.hset(f"reel:apikey:{key_hash.decode()}", "revoked", "1")
        return True

    def ensure_tenant(self, tenant: str, webhook_secret: str) -> str:
        """Create the tenant with this webhook secret unless it exists; returns its secret."""
        self.redis.hsetnx(f"reel:tenant:{tenant}", "webhook_secret", webhook_secret)
        self.redis.hsetnx(f"reel:tenant:{tenant}", "created_at", int(time.time()))
        return self.redis.hget(f"reel:tenant:{tenant}", "webhook_secret").decode()

    def tenant_webhook_secret(self, tenant: str) -> str | None:
        secret = self.redis.hget(f"reel:tenant:{tenant}", "webhook_secret")
        return secret.decode() if secret else None
