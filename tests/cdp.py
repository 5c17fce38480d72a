"""A small Chrome DevTools Protocol client over a pipe, with the standard library only.

Chromium started with ``--remote-debugging-pipe`` reads commands from file
descriptor 3 and writes replies and events to descriptor 4, each message
one JSON object ended by a NUL byte.  :class:`Browser` starts it that way
(a few lines of Python put the two pipe ends on 3 and 4, then become
Chromium: ``Popen`` keeps a passed descriptor's number), opens one page,
and offers what the timeline's tests need: load a page, evaluate
JavaScript, move and click the mouse, press keys, take screenshots, and
collect every console message and uncaught exception.

Every wait has a deadline: a browser that stops answering raises
:class:`TimeoutError` instead of hanging the test suite.

``python tests/cdp.py PAGE PREFIX`` writes screenshots of a timeline page's
first, middle and last frames to ``PREFIX-first.png`` and so on (``make docs``).
"""

from __future__ import annotations

import base64
import json
import os
import select
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType
from typing import Any

__all__ = ["Browser", "CDPError", "find_chromium"]

# Quiet, offline, and the same on every machine: no first-run UI, no background traffic.
FLAGS = (
    "--headless",
    "--no-sandbox",
    "--remote-debugging-pipe",
    "--disable-gpu",
    "--no-first-run",
    "--no-default-browser-check",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-extensions",
    "--disable-quic",
    "--mute-audio",
    "--hide-scrollbars",
    "--force-color-profile=srgb",
)


# Run in the child: put the pipe ends passed as argv[1] and argv[2] on descriptors 3 and 4,
# where Chromium looks for them, then become Chromium.  (Moved above 10 first, so that
# neither lands on the other's place.)
_ON_3_AND_4 = """
import fcntl, os, sys
ends = [fcntl.fcntl(int(fd), fcntl.F_DUPFD, 10) for fd in sys.argv[1:3]]
for fd in sys.argv[1:3]:
    os.close(int(fd))
for end, target in zip(ends, (3, 4)):
    os.dup2(end, target)
    os.close(end)
os.execvp(sys.argv[3], sys.argv[3:])
"""


class CDPError(RuntimeError):
    """Chromium answered a command with an error, or went away."""


def find_chromium() -> str | None:
    """Debian's ``chromium`` on the PATH, or None."""
    return shutil.which("chromium")


class Browser:
    """One headless Chromium with one page, driven over the DevTools pipe.

    ``events`` keeps every event of the page's session in arrival order
    (method, params); :meth:`problems` picks out the console errors and
    warnings and the uncaught exceptions among them.
    """

    def __init__(
        self,
        executable: str,
        width: int = 1280,
        height: int = 900,
        timeout: float = 30.0,
    ) -> None:
        self.timeout = timeout
        self._profile = tempfile.mkdtemp(prefix="arenas-cdp-")
        self._log = open(Path(self._profile) / "chromium.log", "w+b")  # noqa: SIM115 (closed in close())
        commands_read, self._commands = os.pipe()
        self._replies, replies_write = os.pipe()
        try:
            self.proc = subprocess.Popen(
                [
                    sys.executable,
                    "-c",
                    _ON_3_AND_4,
                    str(commands_read),
                    str(replies_write),
                    executable,
                    *FLAGS,
                    f"--user-data-dir={self._profile}",
                    f"--window-size={width},{height}",
                    "about:blank",
                ],
                pass_fds=(commands_read, replies_write),
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=self._log,
            )
        finally:
            os.close(commands_read)  # (the child has its own copies now)
            os.close(replies_write)
        self._buffer = b""
        self._last_id = 0
        self.events: list[tuple[str, dict[str, Any]]] = []
        self.session = ""
        try:
            target = self.call("Target.createTarget", url="about:blank")["targetId"]
            self.session = self.call("Target.attachToTarget", targetId=target, flatten=True)[
                "sessionId"
            ]
            for domain in ("Page", "Runtime", "Log", "Network"):
                self.page(f"{domain}.enable")
            self.page(
                "Emulation.setDeviceMetricsOverride",
                width=width,
                height=height,
                deviceScaleFactor=1,
                mobile=False,
            )
        except BaseException:
            self.close()
            raise

    # ---------------------------------------------------------------- the wire
    def _send(self, method: str, params: dict[str, Any], session: str) -> int:
        self._last_id += 1
        message: dict[str, Any] = {"id": self._last_id, "method": method, "params": params}
        if session:
            message["sessionId"] = session
        data = json.dumps(message).encode() + b"\0"
        while data:
            data = data[os.write(self._commands, data) :]
        return self._last_id

    def _receive(self, deadline: float, waiting_for: str) -> dict[str, Any]:
        """The next message; events of the page's session are kept in :attr:`events`."""
        while b"\0" not in self._buffer:
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([self._replies], [], [], left)[0]:
                raise TimeoutError(f"chromium: no {waiting_for} within {self.timeout} s")
            chunk = os.read(self._replies, 1 << 16)
            if not chunk:
                raise CDPError(f"chromium went away while waiting for {waiting_for}{self._tail()}")
            self._buffer += chunk
        raw, self._buffer = self._buffer.split(b"\0", 1)
        message: dict[str, Any] = json.loads(raw)
        if "method" in message and message.get("sessionId") == self.session:
            self.events.append((message["method"], message.get("params", {})))
        return message

    def _tail(self) -> str:
        self._log.seek(0)
        text = self._log.read().decode(errors="replace").strip()
        return f"; its last words: {text[-1500:]}" if text else ""

    def call(self, method: str, session: str = "", **params: Any) -> dict[str, Any]:
        """Send one command and wait for its reply (events that come first are kept)."""
        ident = self._send(method, params, session)
        deadline = time.monotonic() + self.timeout
        while True:
            message = self._receive(deadline, f"reply to {method}")
            if message.get("id") == ident:
                if "error" in message:
                    raise CDPError(f"{method}: {message['error'].get('message', message['error'])}")
                result: dict[str, Any] = message.get("result", {})
                return result

    def page(self, method: str, **params: Any) -> dict[str, Any]:
        """A command to the page (its session)."""
        return self.call(method, self.session, **params)

    def wait_event(self, method: str, since: int = 0) -> dict[str, Any]:
        """The params of the first event ``method`` from index ``since`` of :attr:`events`."""
        deadline = time.monotonic() + self.timeout
        seen = since
        while True:
            for name, params in self.events[seen:]:
                if name == method:
                    return params
            seen = len(self.events)
            self._receive(deadline, f"event {method}")

    # ---------------------------------------------------------------- the page
    def open(self, url: str, ready: str = "document.body.dataset.ready === '1'") -> None:
        """Load ``url`` and wait until its load event, then until ``ready`` is true."""
        mark = len(self.events)
        self.page("Page.navigate", url=url)
        self.wait_event("Page.loadEventFired", since=mark)
        self.wait_for(ready)

    def evaluate(self, expression: str) -> Any:
        """The value of a JavaScript expression in the page (promises awaited)."""
        reply = self.page(
            "Runtime.evaluate", expression=expression, returnByValue=True, awaitPromise=True
        )
        if "exceptionDetails" in reply:
            details = reply["exceptionDetails"]
            text = details.get("exception", {}).get("description") or details.get("text")
            raise CDPError(f"{expression[:80]!r} raised: {text}")
        return reply["result"].get("value")

    def wait_for(self, expression: str, timeout: float | None = None) -> Any:
        """Evaluate ``expression`` until it is truthy; its value."""
        deadline = time.monotonic() + (self.timeout if timeout is None else timeout)
        while True:
            value = self.evaluate(expression)
            if value:
                return value
            if time.monotonic() > deadline:
                raise TimeoutError(f"{expression!r} still false after {timeout or self.timeout} s")
            time.sleep(0.02)

    def mouse(self, kind: str, x: float, y: float, button: str = "none") -> None:
        """One mouse event: kind is mouseMoved, mousePressed or mouseReleased."""
        self.page(
            "Input.dispatchMouseEvent",
            type=kind,
            x=x,
            y=y,
            button=button,
            buttons=1 if button == "left" and kind == "mousePressed" else 0,
            clickCount=1 if kind != "mouseMoved" else 0,
        )

    def press(self, key: str, code: int) -> None:
        """Press and release one key: ``key`` as ``KeyboardEvent.key`` names it, ``code``
        its Windows virtual key code (ArrowRight is 39)."""
        for kind in ("keyDown", "keyUp"):
            self.page("Input.dispatchKeyEvent", type=kind, key=key, windowsVirtualKeyCode=code)

    def click(self, x: float, y: float) -> None:
        self.mouse("mouseMoved", x, y)
        self.mouse("mousePressed", x, y, "left")
        self.mouse("mouseReleased", x, y, "left")

    def screenshot(self, path: str | Path) -> Path:
        """The whole page, not only the window, as a PNG."""
        size = self.page("Page.getLayoutMetrics")["cssContentSize"]
        shot = self.page(
            "Page.captureScreenshot",
            format="png",
            captureBeyondViewport=True,
            clip={"x": 0, "y": 0, "width": size["width"], "height": size["height"], "scale": 1},
        )
        path = Path(path)
        path.write_bytes(base64.b64decode(shot["data"]))
        return path

    def problems(self) -> list[str]:
        """Console errors and warnings, uncaught exceptions, and log errors, as text."""
        found = []
        for method, params in self.events:
            if method == "Runtime.consoleAPICalled" and params["type"] in (
                "error",
                "warning",
                "assert",
            ):
                args = " ".join(
                    str(a.get("value", a.get("description", ""))) for a in params["args"]
                )
                found.append(f"console.{params['type']}: {args}")
            elif method == "Runtime.exceptionThrown":
                details = params["exceptionDetails"]
                text = details.get("exception", {}).get("description") or details.get("text")
                found.append(f"exception: {text}")
            elif method == "Log.entryAdded" and params["entry"]["level"] in ("error", "warning"):
                found.append(f"log {params['entry']['level']}: {params['entry']['text']}")
        return found

    def requests(self) -> list[str]:
        """The URL of every request the page made."""
        return [
            params["request"]["url"]
            for method, params in self.events
            if method == "Network.requestWillBeSent"
        ]

    # ---------------------------------------------------------------- the end
    def close(self) -> None:
        """Ask Chromium to quit; kill it if it does not within a few seconds."""
        if self.proc.poll() is None:
            try:
                self._send("Browser.close", {}, "")
                self.proc.wait(timeout=5)
            except (OSError, subprocess.TimeoutExpired):
                self.proc.kill()
                self.proc.wait(timeout=10)
        for fd in (self._commands, self._replies):
            try:
                os.close(fd)
            except OSError:
                pass
        self._log.close()
        shutil.rmtree(self._profile, ignore_errors=True)

    def __enter__(self) -> Browser:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


FRAMES = ("first", "middle", "last")


def screenshot_frames(page: str | Path, prefix: str, which: Sequence[str] = FRAMES) -> list[Path]:
    """Screenshots of a timeline page at its first, middle or last frame: PREFIX-first.png..."""
    chromium = find_chromium()
    if chromium is None:
        raise CDPError("chromium is not installed (Debian: apt-get install chromium)")
    written = []
    with Browser(chromium, width=1280, height=800) as browser:
        browser.open(Path(page).resolve().as_uri())
        last = browser.evaluate("timeline.frames") - 1
        frame = {"first": 0, "middle": last // 2, "last": last}
        for name in which:
            browser.evaluate(f"timeline.go({frame[name]})")
            written.append(browser.screenshot(f"{prefix}-{name}.png"))
        if browser.problems():
            raise CDPError("the page complained: " + "; ".join(browser.problems()))
    return written


if __name__ == "__main__":
    which = sys.argv[3:] or FRAMES
    if len(sys.argv) < 3 or not set(which) <= set(FRAMES):
        sys.exit("usage: python tests/cdp.py PAGE PREFIX [first] [middle] [last]")
    for path in screenshot_frames(sys.argv[1], sys.argv[2], which):
        print(path)
