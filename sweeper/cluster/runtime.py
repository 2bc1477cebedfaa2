"""The Ray runtime's life: the environment sweeper starts Ray with, one runtime shared by several pools
(:class:`ray_runtime`, joined or started and stopped), and the early start that overlaps Ray's start-up with
the model's preparation (:func:`start_runtime_early`, :func:`release_early_runtime`). Ray is imported inside
the functions."""

from __future__ import annotations

import os
import threading
from typing import Any


def quiet_ray_env() -> None:
    """Ray's environment defaults for the sweeper; set before ``import ray`` (some are read at import)."""
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    os.environ.setdefault("RAY_DEDUP_LOGS", "1")
    os.environ.setdefault("RAY_ACCEL_ENV_VAR_OVERRIDE_ON_ZERO", "0")
    # a stray Ray call after the pool closed must fail, not start a second runtime nobody stops
    os.environ.setdefault("RAY_ENABLE_AUTO_CONNECT", "0")


def _ray_init(address: str | None, num_cpus: int | None) -> None:
    import logging

    import ray

    kwargs: dict[str, Any] = dict(include_dashboard=False, log_to_driver=False,
                                  logging_level=logging.ERROR, configure_logging=True)
    if address:
        ray.init(address=address, **kwargs)
    else:
        ray.init(num_cpus=num_cpus or os.cpu_count() or 1, **kwargs)


class _EarlyStart:
    """A local Ray runtime started on a background thread while the driver prepares the model (export,
    calibration, the FP32 reference: about as long as Ray's ~5 s start on the example), so a command does not
    pay for both one after the other. The thread lives until the runtime is shut down: Ray ties the
    processes it spawns to the thread that started them (measured: they die when it ends)."""

    def __init__(self, num_cpus: int) -> None:
        self.error: BaseException | None = None
        self._ready, self._done = threading.Event(), threading.Event()
        self._thread = threading.Thread(target=self._run, args=(num_cpus,), name="sweeper-ray-start", daemon=True)
        self._thread.start()

    def _run(self, num_cpus: int) -> None:
        try:
            _ray_init(None, num_cpus)
        except BaseException as exc:  # noqa: BLE001 - re-raised where the runtime is used (ray_runtime)
            self.error = exc
        finally:
            self._ready.set()
        self._done.wait()

    def wait(self) -> bool:
        """Block until the start is over; True if the runtime is up."""
        self._ready.wait()
        return self.error is None

    def end(self) -> None:
        """Let the thread finish (after ``ray.shutdown``, or when the start failed)."""
        self._done.set()
        self._thread.join(timeout=10)


_EARLY: _EarlyStart | None = None
_EARLY_LOCK = threading.Lock()


def start_runtime_early(num_cpus: int) -> None:
    """Start the local Ray runtime in the background now; the first :class:`ray_runtime` (a RayPool) adopts
    it and shuts it down as if it had started it. Nothing happens when Ray is already up, when an address
    (``RAY_ADDRESS``) names a cluster to join, or when an early start is pending. Pair with
    :func:`release_early_runtime` so a runtime nobody adopted is stopped."""
    global _EARLY
    quiet_ray_env()
    if os.environ.get("RAY_ADDRESS"):
        return
    with _EARLY_LOCK:
        if _EARLY is not None:
            return
        import ray

        if not ray.is_initialized():
            _EARLY = _EarlyStart(num_cpus)


def _take_early() -> _EarlyStart | None:
    global _EARLY
    with _EARLY_LOCK:
        early, _EARLY = _EARLY, None
    return early


def release_early_runtime() -> None:
    """Stop a runtime :func:`start_runtime_early` started that no pool adopted (a fully resumed sweep, an
    error before the pool started)."""
    early = _take_early()
    if early is None:
        return
    if early.wait():
        import ray

        ray.shutdown()
    early.end()


class ray_runtime:  # noqa: N801 - used as a context manager, like contextlib helpers
    """Start (or join, with an address) one Ray runtime for several pools; shut it down at the end if this
    process started it (an early start, :func:`start_runtime_early`, counts as started here)."""

    def __init__(self, address: str | None = None, num_cpus: int | None = None) -> None:
        self.address = address or os.environ.get("RAY_ADDRESS")
        self.num_cpus = num_cpus
        self.started = False
        self._early: _EarlyStart | None = None

    def __enter__(self) -> ray_runtime:
        quiet_ray_env()
        import ray

        early = None if self.address else _take_early()
        if early is not None:
            if early.wait() and ray.is_initialized():
                self.started, self._early = True, early
                return self
            early.end()  # it failed: start here, where the error is raised to the caller
        if not ray.is_initialized():
            _ray_init(self.address, self.num_cpus)
            self.started = True
        return self

    def __exit__(self, *exc: object) -> None:
        if self.started:
            import ray

            self.started = False
            ray.shutdown()
        if self._early is not None:
            self._early.end()
            self._early = None
