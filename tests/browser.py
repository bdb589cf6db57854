"""Headless Chromium driven over the DevTools protocol on a pipe (no extra packages).

    with Browser() as b:
        b.open("file:///tmp/page.html")
        b.wait_for("document.body.dataset.state === 'drawn'")
        png = b.screenshot()            # (h, w, 4) floats in 0..1
        b.click("#mode-deformation")
        b.requests                      # every URL the page asked for
        b.problems                      # console errors, exceptions, failed loads

WebGL runs in software (SwiftShader), so no GPU is needed.  Every request the page makes is
recorded from the Network domain (``requestWillBeSent``), whatever its scheme; a proxy that
goes nowhere keeps anything from leaving the machine while the test runs.
"""

from __future__ import annotations

import base64
import io
import json
import os
import select
import shutil
import subprocess
import sys
import tempfile
import time


PLACE_FDS = """
import fcntl, os, sys
high = [fcntl.fcntl(int(fd), fcntl.F_DUPFD, 10) for fd in sys.argv[1:3]]
for fd in sys.argv[1:3]:
    os.close(int(fd))
os.dup2(high[0], 3)
os.dup2(high[1], 4)
for fd in high:
    os.close(fd)
os.execv(sys.argv[3], sys.argv[3:])
"""


def chromium_path() -> str | None:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        path = shutil.which(name)
        if path:
            return path
    return None


class Browser:
    def __init__(self, width: int = 800, height: int = 600, timeout: float = 60.0):
        self.width, self.height, self.timeout = width, height, timeout
        self.requests: list[str] = []
        self.problems: list[str] = []
        self._id = 0
        self._buffer = b""
        self._events: list[dict] = []

    # ------------------------------------------------------------ process and pipe

    def __enter__(self):
        exe = chromium_path()
        if exe is None:
            raise RuntimeError("no chromium on PATH")
        self._profile = tempfile.mkdtemp(prefix="rhosr-chromium-")
        to_child_r, self._to_child = os.pipe()
        self._from_child, from_child_w = os.pipe()
        args = [exe, "--headless", "--no-sandbox", "--enable-unsafe-swiftshader",
                "--use-angle=swiftshader", "--enable-webgl", "--ignore-gpu-blocklist",
                "--disable-dev-shm-usage", "--no-first-run", "--no-default-browser-check",
                "--disable-extensions", "--disable-background-networking", "--disable-sync",
                "--proxy-server=127.0.0.1:9", "--proxy-bypass-list=<-loopback>",
                f"--user-data-dir={self._profile}", f"--window-size={self.width},{self.height}",
                "--remote-debugging-pipe", "about:blank"]
        # Chromium reads commands on fd 3 and answers on fd 4: a small Python step puts the pipe
        # ends there and execs it (no preexec_fn, which is unsafe in a process with threads)
        self.proc = subprocess.Popen([sys.executable, "-c", PLACE_FDS, str(to_child_r), str(from_child_w),
                                      *args], pass_fds=(to_child_r, from_child_w),
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        os.close(to_child_r)
        os.close(from_child_w)
        target = self.call("Target.createTarget", url="about:blank")["targetId"]
        self.session = self.call("Target.attachToTarget", targetId=target, flatten=True)["sessionId"]
        for domain in ("Page", "Network", "Runtime", "Log"):
            self.call(f"{domain}.enable", session=True)
        self.call("Emulation.setDeviceMetricsOverride", session=True, width=self.width,
                  height=self.height, deviceScaleFactor=1, mobile=False)
        return self

    def __exit__(self, *exc):
        try:
            self.call("Browser.close", timeout=5)
        except Exception:  # noqa: BLE001 -- closing anyway
            pass
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        for fd in (self._to_child, self._from_child):
            try:
                os.close(fd)
            except OSError:
                pass
        shutil.rmtree(self._profile, ignore_errors=True)
        return False

    def _send(self, message: dict) -> None:
        data = json.dumps(message).encode() + b"\0"
        while data:
            data = data[os.write(self._to_child, data):]

    def _receive(self, deadline: float) -> dict:
        while b"\0" not in self._buffer:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError("no answer from chromium")
            ready, _, _ = select.select([self._from_child], [], [], left)
            if ready:
                chunk = os.read(self._from_child, 1 << 20)
                if not chunk:
                    raise RuntimeError("chromium closed the pipe")
                self._buffer += chunk
        raw, self._buffer = self._buffer.split(b"\0", 1)
        message = json.loads(raw)
        if "method" in message:
            self._record(message)
        return message

    def _record(self, event: dict) -> None:
        method, params = event["method"], event.get("params", {})
        if method == "Network.requestWillBeSent":
            self.requests.append(params["request"]["url"])
        elif method == "Network.loadingFailed":
            self.problems.append(f"load failed: {params.get('errorText')}")
        elif method == "Runtime.exceptionThrown":
            details = params.get("exceptionDetails", {})
            text = details.get("exception", {}).get("description") or details.get("text")
            self.problems.append(f"exception: {text}")
        elif method == "Runtime.consoleAPICalled" and params.get("type") in ("error", "assert"):
            self.problems.append("console: " + " ".join(str(a.get("value", a.get("description")))
                                                        for a in params.get("args", [])))
        elif method == "Log.entryAdded" and params["entry"].get("level") == "error":
            self.problems.append(f"log: {params['entry'].get('text')}")
        self._events.append(event)

    def call(self, method: str, session: bool = False, timeout: float | None = None, **params):
        self._id += 1
        message = {"id": self._id, "method": method, "params": params}
        if session:
            message["sessionId"] = self.session
        self._send(message)
        deadline = time.monotonic() + (timeout or self.timeout)
        while True:
            answer = self._receive(deadline)
            if answer.get("id") == self._id:
                if "error" in answer:
                    raise RuntimeError(f"{method}: {answer['error']}")
                return answer.get("result", {})

    # ------------------------------------------------------------ what a person does

    def open(self, url: str) -> None:
        self.call("Page.navigate", session=True, url=url)

    def evaluate(self, expression: str):
        result = self.call("Runtime.evaluate", session=True, expression=expression, returnByValue=True)
        if "exceptionDetails" in result:
            raise RuntimeError(f"{expression}: {result['exceptionDetails']}")
        return result["result"].get("value")

    def wait_for(self, expression: str, timeout: float | None = None) -> None:
        deadline = time.monotonic() + (timeout or self.timeout)
        while time.monotonic() < deadline:
            if self.evaluate(f"(function () {{ try {{ return !!({expression}); }} "
                             "catch (e) { return false; } })()"):
                return
            if self.evaluate("document.body ? document.body.dataset.state : ''") == "error":
                raise AssertionError("page error: " + str(self.evaluate("document.body.dataset.error")))
            time.sleep(0.1)
        raise TimeoutError(f"waited {timeout or self.timeout:.0f} s for {expression}")

    def click(self, selector: str) -> None:
        """A left click in the middle of the element, as a mouse would."""
        box = self.evaluate(f"JSON.stringify(document.querySelector({json.dumps(selector)})"
                            ".getBoundingClientRect())")
        rect = json.loads(box)
        x, y = rect["x"] + rect["width"] / 2, rect["y"] + rect["height"] / 2
        self.call("Input.dispatchMouseEvent", session=True, type="mouseMoved", x=x, y=y)
        for kind in ("mousePressed", "mouseReleased"):
            self.call("Input.dispatchMouseEvent", session=True, type=kind, x=x, y=y,
                      button="left", clickCount=1)

    def screenshot(self, path=None):
        """The viewport as an (h, w, 4) float array (and the PNG at ``path``)."""
        import matplotlib.image

        png = base64.b64decode(self.call("Page.captureScreenshot", session=True, format="png")["data"])
        if path is not None:
            with open(path, "wb") as f:
                f.write(png)
        return matplotlib.image.imread(io.BytesIO(png), format="png")
