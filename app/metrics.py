"""Prometheus metrics, exported by the API for the whole deployment.

Workers and the API write observations into Redis through JobStore (so any number
of processes add to one histogram); the API's collector reads them at scrape time.
The worker records a sampler step with `observe_step_seconds(store, seconds)`; job
latencies are recorded by `JobStore.complete`, webhook outcomes by `webhooks.deliver`.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily

JOB_LATENCY_BUCKETS = (1, 2, 5, 10, 20, 30, 60, 120, 300, 600, 1800, 3600)
STEP_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)
STATUSES = ("queued", "in_progress", "completed", "failed", "cancelled")

HISTOGRAMS = (
    ("job_latency_seconds", JOB_LATENCY_BUCKETS, "Seconds from a job's creation to its completion."),
    ("job_run_seconds", JOB_LATENCY_BUCKETS, "Seconds from a job's start on a worker to its completion."),
    ("sampler_step_seconds", STEP_BUCKETS, "Seconds per sampler step (one transformer pass over the batch)."),
)


def observe_step_seconds(store, seconds: float) -> None:
    store.observe("sampler_step_seconds", seconds, STEP_BUCKETS)


class StoreCollector:
    """Reads the shared metrics out of the job store at every scrape."""

    def __init__(self, store):
        self.store = store

    def collect(self):
        counts = self.store.status_counts()
        jobs = GaugeMetricFamily("reel_jobs", "Job records in the store, by status.", labels=["status"])
        for status in STATUSES:
            jobs.add_metric([status], max(0, counts.get(status, 0)))
        yield jobs
        yield GaugeMetricFamily("reel_queue_depth", "Jobs waiting for a worker.", value=self.store.queue_depth())
        yield GaugeMetricFamily("reel_workers", "Workers heard from recently.", value=len(self.store.workers()))
        for name, buckets, documentation in HISTOGRAMS:
            raw = self.store.histogram(name)
            cumulative, running = [], 0.0
            for bound in buckets:
                running += raw.get(str(bound), 0.0)
                cumulative.append((str(float(bound)), running))
            running += raw.get("+Inf", 0.0)
            cumulative.append(("+Inf", running))
            yield HistogramMetricFamily(f"reel_{name}", documentation, buckets=cumulative, sum_value=raw.get("sum", 0.0))
        deliveries = CounterMetricFamily("reel_webhook_deliveries", "Webhook delivery attempts, by outcome.",
                                         labels=["outcome"])
        for outcome, count in sorted(self.store.counter("webhook_deliveries").items()):
            deliveries.add_metric([outcome], count)
        yield deliveries


def make_registry(store) -> CollectorRegistry:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(StoreCollector(store))
    return registry
