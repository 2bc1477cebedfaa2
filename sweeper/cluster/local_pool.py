"""The in-process pool: one worker object in this process, with the Ray pool's interface (debugging, unit
tests, and a second pool of one worker that a step builds for itself)."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from typing import Any

from sweeper.cluster.protocol import Result, WorkerFactory, result_from
from sweeper.quant.profile import Profile


class InProcessPool:
    """Same interface as the Ray pool, evaluating in this process (for debugging and unit tests)."""

    def __init__(self, factory: WorkerFactory, spec: Any) -> None:
        self.worker = factory(spec, "local-0", None)  # in one process: nobody to share with
        self.size = 1

    def map_calls(self, method: str, calls: list[tuple[Any, ...]]) -> Iterator[tuple[int, Any]]:
        for i, args in enumerate(calls):
            yield i, getattr(self.worker, method)(*args)

    def map_dynamic(self, method: str, next_call: Callable[[], tuple[Any, tuple[Any, ...]] | None]
                    ) -> Iterator[tuple[Any, Any]]:
        while (call := next_call()) is not None:
            tag, args = call
            yield tag, getattr(self.worker, method)(*args)

    def map_unordered(self, profiles: Iterable[Profile], reference: Profile | None = None,
                      target: Any = None) -> Iterator[Result]:
        ref = None if reference is None else reference.to_json()
        for _, ev in self.map_calls("evaluate", [(p.to_json(), ref, None, target) for p in profiles]):
            yield result_from(ev)

    def close(self) -> None:
        pass
