"""Progress bars (tqdm, or plain lines where stderr is not a terminal) for one training run, or for
several runs trained in worker processes.

A worker cannot draw on the parent's terminal, so it sends ``(name, step, total, postfix)``
messages through a queue; the parent draws one bar per run.
"""

from __future__ import annotations

import queue
import sys
import threading
import time
from typing import Any, Protocol

from tqdm.auto import tqdm


class Progress(Protocol):
    def start(self, total: int, initial: int = 0) -> None: ...
    def update(self, step: int, postfix: dict[str, str]) -> None: ...
    def close(self) -> None: ...


class Bar:
    """Progress of one run in this process: a tqdm bar on a terminal; where stderr is not a terminal
    (a log file, CI, a job scheduler), a plain line every ``interval`` seconds and at the end,
    instead of a bar redrawn with carriage returns."""

    def __init__(self, name: str, position: int = 0, enabled: bool = True, interval: float = 30.0):
        self.name, self.position, self.enabled, self.interval = name, position, enabled, interval
        self.bar: tqdm | None = None
        self.lines: PlainLines | None = None

    def start(self, total: int, initial: int = 0) -> None:
        if not self.enabled:
            return
        if not sys.stderr.isatty():
            self.lines = PlainLines(self.name, total, initial, self.interval)
            return
        self.bar = tqdm(
            total=total,
            initial=initial,
            desc=self.name,
            position=self.position,
            leave=True,
            dynamic_ncols=True,
            file=sys.stderr,
            mininterval=0.5,
        )

    def update(self, step: int, postfix: dict[str, str]) -> None:
        if self.lines is not None:
            self.lines.update(step, postfix)
        if self.bar is None:
            return
        self.bar.n = step
        if postfix:
            self.bar.set_postfix(postfix, refresh=False)
        self.bar.refresh() if self.bar.n >= self.bar.total else self.bar.update(0)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None
        self.lines = None


class PlainLines:
    """``name: step/total (percent), speed, time left, postfix`` on stderr, at most every ``interval``
    seconds, and once more at the last step."""

    def __init__(self, name: str, total: int, initial: int, interval: float):
        self.name, self.total, self.initial, self.interval = name, total, initial, interval
        self.started = self.last = time.monotonic()

    def update(self, step: int, postfix: dict[str, str]) -> None:
        now = time.monotonic()
        if now - self.last < self.interval and step < self.total:
            return
        self.last = now
        rate = (step - self.initial) / max(now - self.started, 1e-9)
        left = f", {(self.total - step) / rate / 60:.1f} min left" if rate > 0 and step < self.total else ""
        shown = "".join(f", {key} {value}" for key, value in postfix.items())
        print(
            f"{self.name}: {step}/{self.total} ({100 * step / self.total:.0f} %), {rate:.1f}/s{left}{shown}",
            file=sys.stderr,
            flush=True,
        )


class QueueReporter:
    """Worker side: sends progress to the parent at most every ``interval`` seconds."""

    def __init__(self, name: str, channel: Any, interval: float = 0.5):
        self.name, self.channel, self.interval = name, channel, interval
        self.total, self.last = 0, 0.0

    def start(self, total: int, initial: int = 0) -> None:
        self.total = total
        self.channel.put(("start", self.name, initial, total, {}))

    def update(self, step: int, postfix: dict[str, str]) -> None:
        now = time.monotonic()
        if now - self.last >= self.interval or step >= self.total:
            self.last = now
            self.channel.put(("update", self.name, step, self.total, postfix))

    def close(self) -> None:
        self.channel.put(("close", self.name, 0, 0, {}))


class BarBoard:
    """Parent side: a thread that draws one bar per worker run from the queue's messages."""

    def __init__(self, channel: Any, names: list[str], enabled: bool = True):
        self.channel = channel
        self.bars = {name: Bar(name, position=i, enabled=enabled) for i, name in enumerate(names)}
        self.stopping = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> BarBoard:
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stopping.set()
        self.thread.join(timeout=5)
        for bar in self.bars.values():
            bar.close()

    def _run(self) -> None:
        while not self.stopping.is_set():
            try:
                kind, name, step, total, postfix = self.channel.get(timeout=0.2)
            except queue.Empty:
                continue
            except (EOFError, OSError):
                return
            bar = self.bars.get(name)
            if bar is None:
                continue
            if kind == "start":
                bar.start(total, step)
            elif kind == "update":
                bar.update(step, postfix)
            elif kind == "close":
                bar.close()
