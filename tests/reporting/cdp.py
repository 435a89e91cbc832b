"""A small Chrome DevTools Protocol client for headless Chromium, standard library only.

Chromium is started with ``--remote-debugging-pipe``: it reads CDP commands from file descriptor 3 and
writes answers and events to descriptor 4, each message JSON terminated by a NUL byte. No port is
opened and no websocket library is needed. Used by the browser tests and by ``tools/screenshots.py``.

Every event is recorded (``Page.events``) so a test can assert afterwards on network requests
(``Network.requestWillBeSent``) or dialogs (``Page.javascriptDialogOpening``); dialogs are dismissed at
once so a page that calls ``alert()`` cannot hang the test.
"""

from __future__ import annotations

import base64
import contextlib
import itertools
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Final

DEFAULT_CHROMIUM: Final = "/usr/bin/chromium"

# Without these Chromium tries to reach Google (updates, field trials, safe browsing) and fails here.
CHROMIUM_FLAGS: Final = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--no-default-browser-check",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-extensions",
    "--disable-default-apps",
    "--disable-dev-shm-usage",
    "--hide-scrollbars",
    "--mute-audio",
    "--remote-debugging-pipe",
)

JsonDict = dict[str, Any]

# argv: READ_FD WRITE_FD EXECUTABLE ARGS...; moves the fds above 9 first so the dup2s cannot clobber them.
_TRAMPOLINE: Final = (
    "import fcntl, os, sys\n"
    "r, w = (fcntl.fcntl(int(fd), fcntl.F_DUPFD, 10) for fd in sys.argv[1:3])\n"
    "os.dup2(r, 3)\n"
    "os.dup2(w, 4)\n"
    "os.closerange(5, 1024)\n"
    "os.execv(sys.argv[3], sys.argv[3:])\n"
)


class CDPError(RuntimeError):
    """A CDP command failed, timed out, or the browser went away."""


def chromium_path() -> str:
    """The Chromium to drive: ``$CHROMIUM`` if set, else Debian's ``/usr/bin/chromium``."""
    return os.environ.get("CHROMIUM", DEFAULT_CHROMIUM)


START_UP_SECONDS = 120.0  # the first answer of a browser that starts cold


class Browser:
    """One headless Chromium process with a fresh profile; use as a context manager."""

    def __init__(self, executable: str | None = None, *, timeout: float = 30.0) -> None:
        self.executable = executable or chromium_path()
        self.timeout = timeout
        self._profile = Path(tempfile.mkdtemp(prefix="auditor-chromium-"))
        self._log = (self._profile.parent / (self._profile.name + ".log")).open("wb")
        to_browser_r, self._to_browser = os.pipe()
        self._from_browser, from_browser_w = os.pipe()
        # A tiny trampoline puts the pipe ends on fds 3 and 4, where --remote-debugging-pipe expects
        # them (a shell cannot: dash only takes one-digit fds), then becomes Chromium.
        self._process = subprocess.Popen(  # noqa: S603 - fixed argv, no shell
            [
                sys.executable,
                "-c",
                _TRAMPOLINE,
                str(to_browser_r),
                str(from_browser_w),
                self.executable,
                *CHROMIUM_FLAGS,
                f"--user-data-dir={self._profile}",
                "about:blank",
            ],
            pass_fds=(to_browser_r, from_browser_w),
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=self._log,
        )
        os.close(to_browser_r)
        os.close(from_browser_w)
        self._ids = itertools.count(1)
        self._write_lock = threading.Lock()
        self._cond = threading.Condition()
        self._answers: dict[int, JsonDict] = {}
        self._events: list[JsonDict] = []
        self._closed = False
        self._reader = threading.Thread(target=self._read_loop, name="cdp-reader", daemon=True)
        self._reader.start()
        try:
            # A browser's first start on a machine (a new profile, fonts being cached) can take far longer
            # than any later command: its first answer gets a start-up allowance of its own.
            self.version = self.send("Browser.getVersion", start_up=True)
        except BaseException:
            self.close()  # a browser that failed to start leaves no process or profile behind
            raise

    # --- plumbing --------------------------------------------------------------------------------------

    def _read_loop(self) -> None:
        buffer = b""
        while True:
            try:
                chunk = os.read(self._from_browser, 1 << 16)
            except OSError:
                chunk = b""
            if not chunk:
                break
            buffer += chunk
            *messages, buffer = buffer.split(b"\0")
            for raw in messages:
                if raw:
                    self._dispatch(json.loads(raw))
        with self._cond:
            self._closed = True
            self._cond.notify_all()

    def _dispatch(self, message: JsonDict) -> None:
        if message.get("method") == "Page.javascriptDialogOpening" and message.get("sessionId"):
            # Record it, then dismiss it, so the page goes on (the test fails on the record).
            self._post("Page.handleJavaScriptDialog", {"accept": False}, message["sessionId"])
        with self._cond:
            if "id" in message:
                self._answers[int(message["id"])] = message
            else:
                self._events.append(message)
            self._cond.notify_all()

    def _post(self, method: str, params: JsonDict | None, session_id: str | None) -> int:
        command_id = next(self._ids)
        message: JsonDict = {"id": command_id, "method": method, "params": params or {}}
        if session_id:
            message["sessionId"] = session_id
        data = json.dumps(message).encode("utf-8") + b"\0"
        with self._write_lock:
            view = memoryview(data)
            while view:
                written = os.write(self._to_browser, view)
                view = view[written:]
        return command_id

    def send(
        self,
        method: str,
        params: JsonDict | None = None,
        *,
        session_id: str | None = None,
        start_up: bool = False,
    ) -> JsonDict:
        """Send a command and wait for its answer; raises :class:`CDPError` on an error answer."""
        command_id = self._post(method, params, session_id)
        deadline = time.monotonic() + (max(self.timeout, START_UP_SECONDS) if start_up else self.timeout)
        with self._cond:
            while command_id not in self._answers:
                if self._closed:
                    raise CDPError(f"{method}: the browser closed the pipe ({self.log_tail()})")
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise CDPError(f"{method}: no answer within {self.timeout} s")
                self._cond.wait(remaining)
            answer = self._answers.pop(command_id)
        if "error" in answer:
            raise CDPError(f"{method}: {answer['error']}")
        result: JsonDict = answer.get("result", {})
        return result

    def events(self, method: str | None = None, *, session_id: str | None = None) -> list[JsonDict]:
        """Recorded events (``{"method", "params", "sessionId"}``), optionally of one kind / session."""
        with self._cond:
            return [
                e
                for e in self._events
                if (method is None or e.get("method") == method)
                and (session_id is None or e.get("sessionId") == session_id)
            ]

    def wait_for_event(
        self, method: str, *, session_id: str | None = None, after: int = 0, timeout: float | None = None
    ) -> JsonDict:
        """Wait for the ``after``-th-or-later event of a kind (``after`` = count already seen)."""
        deadline = time.monotonic() + (timeout or self.timeout)
        with self._cond:
            while True:
                found = [
                    e
                    for e in self._events
                    if e.get("method") == method and (session_id is None or e.get("sessionId") == session_id)
                ]
                if len(found) > after:
                    return found[after]
                remaining = deadline - time.monotonic()
                if remaining <= 0 or self._closed:
                    raise CDPError(f"no {method} event within {timeout or self.timeout} s")
                self._cond.wait(remaining)

    def log_tail(self, size: int = 2000) -> str:
        """The end of Chromium's own log, for error messages."""
        try:
            self._log.flush()
            return Path(self._log.name).read_bytes()[-size:].decode("utf-8", "replace")
        except OSError:
            return ""

    # --- pages ---------------------------------------------------------------------------------------

    def new_page(self, *, width: int = 1280, height: int = 900) -> Page:
        """A fresh tab with Page, Runtime, Network and Log events enabled and the given viewport."""
        target = self.send("Target.createTarget", {"url": "about:blank"})["targetId"]
        session = self.send("Target.attachToTarget", {"targetId": target, "flatten": True})["sessionId"]
        page = Page(self, target, session)
        for domain in ("Page", "Runtime", "Network", "Log"):
            page.send(f"{domain}.enable")
        page.set_viewport(width, height)
        return page

    def close(self) -> None:
        """Close the browser and remove its profile."""
        if self._process.poll() is None:
            with contextlib.suppress(CDPError, OSError):
                self._post("Browser.close", None, None)
            try:
                self._process.wait(10)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait(10)
        with contextlib.suppress(OSError):
            os.close(self._to_browser)
        self._reader.join(5)
        with contextlib.suppress(OSError):
            os.close(self._from_browser)
        self._log.close()
        shutil.rmtree(self._profile, ignore_errors=True)
        Path(self._log.name).unlink(missing_ok=True)

    def __enter__(self) -> Browser:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class Page:
    """One tab, attached with a flat session."""

    def __init__(self, browser: Browser, target_id: str, session_id: str) -> None:
        self.browser = browser
        self.target_id = target_id
        self.session_id = session_id

    def send(self, method: str, params: JsonDict | None = None) -> JsonDict:
        """A command in this tab's session."""
        return self.browser.send(method, params, session_id=self.session_id)

    def events(self, method: str | None = None) -> list[JsonDict]:
        """This tab's recorded events."""
        return self.browser.events(method, session_id=self.session_id)

    def close(self) -> None:
        """Close the tab."""
        with contextlib.suppress(CDPError):
            self.browser.send("Target.closeTarget", {"targetId": self.target_id})

    def set_viewport(self, width: int, height: int) -> None:
        """Emulate a window of ``width`` x ``height`` CSS pixels."""
        self.send(
            "Emulation.setDeviceMetricsOverride",
            {"width": width, "height": height, "deviceScaleFactor": 1, "mobile": False},
        )

    def goto(self, url: str) -> None:
        """Navigate and wait for the load event."""
        seen = len(self.browser.events("Page.loadEventFired", session_id=self.session_id))
        answer = self.send("Page.navigate", {"url": url})
        if answer.get("errorText"):
            raise CDPError(f"navigation to {url} failed: {answer['errorText']}")
        if not answer.get("loaderId"):
            return  # a same-document navigation (only the fragment changed): there is no load event
        self.browser.wait_for_event("Page.loadEventFired", session_id=self.session_id, after=seen)

    def evaluate(self, expression: str) -> Any:
        """Evaluate JavaScript in the page and return its (JSON-able) value; page exceptions raise."""
        answer = self.send(
            "Runtime.evaluate",
            {"expression": expression, "returnByValue": True, "awaitPromise": True, "userGesture": True},
        )
        if "exceptionDetails" in answer:
            raise CDPError(f"page exception: {answer['exceptionDetails']}")
        return answer.get("result", {}).get("value")

    def press(self, key: str, code: str, key_code: int, text: str = "") -> None:
        """Press and release one key in the focused element, as a keyboard user would."""
        down: JsonDict = {"type": "keyDown", "key": key, "code": code, "windowsVirtualKeyCode": key_code}
        if text:
            down["text"] = text
        self.send("Input.dispatchKeyEvent", down)
        self.send(
            "Input.dispatchKeyEvent",
            {"type": "keyUp", "key": key, "code": code, "windowsVirtualKeyCode": key_code},
        )

    def type_text(self, text: str) -> None:
        """Type ``text`` into the focused element (fires input events like real typing)."""
        self.send("Input.insertText", {"text": text})

    def click(self, selector: str) -> None:
        """A real mouse click at the centre of the first element matching ``selector``."""
        box = self.evaluate(
            f"(() => {{ const e = document.querySelector({json.dumps(selector)}); e.scrollIntoView({{block: 'center'}});"
            " const r = e.getBoundingClientRect(); return [r.left + r.width / 2, r.top + r.height / 2]; })()"
        )
        x, y = box
        for kind in ("mousePressed", "mouseReleased"):
            self.send(
                "Input.dispatchMouseEvent", {"type": kind, "x": x, "y": y, "button": "left", "clickCount": 1}
            )

    def screenshot(
        self, path: Path, *, full_page: bool = False, selector: str | None = None, margin: int = 0
    ) -> Path:
        """Save a PNG of the viewport, the whole page, or one element (the full width of the page, from
        ``margin`` pixels above the element to ``margin`` below it)."""
        params: JsonDict = {"format": "png", "captureBeyondViewport": full_page or selector is not None}
        if selector is not None:
            rect = self.evaluate(
                f"(() => {{ const r = document.querySelector({json.dumps(selector)}).getBoundingClientRect();"
                " return [r.top + window.scrollY, r.height, document.documentElement.clientWidth]; })()"
            )
            top = max(0, rect[0] - margin)
            params["clip"] = {"x": 0, "y": top, "width": rect[2], "height": rect[1] + 2 * margin, "scale": 1}
        elif full_page:
            size = self.evaluate(
                "[document.documentElement.scrollWidth, document.documentElement.scrollHeight]"
            )
            params["clip"] = {"x": 0, "y": 0, "width": size[0], "height": size[1], "scale": 1}
        data = base64.b64decode(self.send("Page.captureScreenshot", params)["data"])
        path.write_bytes(data)
        return path


@contextlib.contextmanager
def browser_session(executable: str | None = None) -> Iterator[Browser]:
    """``with browser_session() as browser: ...``"""
    browser = Browser(executable)
    try:
        yield browser
    finally:
        browser.close()
