"""A headless Chromium driven over the Chrome DevTools Protocol (CDP), for the screenshot tool.

``Page`` starts Chromium with ``--remote-debugging-port=0`` in a fresh profile, reads the port it chose from
``<profile>/DevToolsActivePort``, and talks to the page target over its websocket (``websocket-client``):
navigate, evaluate a script, click, capture a screenshot. Everything stays on 127.0.0.1. ``VISIBLE_TEXT`` is
the script that reads what a page shows, walking into open shadow roots (TensorBoard's Polymer dashboards)
and same-origin iframes (its plugin frames: the Projector, Custom Scalars...), which ``--dump-dom`` cannot.
"""

from __future__ import annotations

import base64
import itertools
import json
import os
import signal
import subprocess
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

HOST = "127.0.0.1"
FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--hide-scrollbars", "--enable-unsafe-swiftshader", "--remote-debugging-address=127.0.0.1",
         "--remote-debugging-port=0")

# The text of every rendered element, one string per text node, in document order: light DOM, open shadow
# roots and same-origin iframes, skipping what is not rendered (display: none, visibility: hidden, an
# unslotted child of a shadow host, a collapsed pane).
VISIBLE_TEXT = r"""
(() => {
  const texts = [];
  const visit = (root) => {
    for (const node of root.childNodes) {
      if (node.nodeType === Node.TEXT_NODE) {
        const text = node.textContent.trim();
        const parent = node.parentElement;
        if (text && parent && parent.checkVisibility({visibilityProperty: true})) texts.push(text);
      } else if (node.nodeType === Node.ELEMENT_NODE) {
        if (node.shadowRoot) visit(node.shadowRoot);
        if (node.tagName === 'IFRAME') {
          try { if (node.contentDocument) visit(node.contentDocument); } catch (e) { /* cross-origin */ }
        }
        if (!['SCRIPT', 'STYLE', 'TEMPLATE'].includes(node.tagName)) visit(node);
      } else if (node.nodeType === Node.DOCUMENT_NODE || node.nodeType === Node.DOCUMENT_FRAGMENT_NODE) {
        visit(node);
      }
    }
  };
  visit(document);
  return texts;
})()
"""


def _get_json(port: int, route: str) -> Any:
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # never through a proxy
    with opener.open(f"http://{HOST}:{port}{route}", timeout=10) as response:
        return json.loads(response.read())


class Page:
    """One page of a headless Chromium, ``width`` x ``height`` CSS pixels at scale 1. Use as a context
    manager: the browser and its profile are gone on exit."""

    def __init__(self, browser: str, width: int, height: int, timeout_s: float = 60):
        self.browser, self.size, self.timeout_s = browser, (width, height), timeout_s
        self._ids = itertools.count(1)

    def __enter__(self) -> Page:
        import websocket

        self._profile = tempfile.TemporaryDirectory(prefix="chromium-profile-", ignore_cleanup_errors=True)
        self._process = subprocess.Popen(
            [self.browser, *FLAGS, f"--window-size={self.size[0]},{self.size[1]}",
             f"--user-data-dir={self._profile.name}", "about:blank"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
        try:
            port = self._debugging_port()
            page = next(t for t in self._targets(port) if t["type"] == "page")
            self._socket = websocket.create_connection(page["webSocketDebuggerUrl"], timeout=self.timeout_s,
                                                       suppress_origin=True)
            self.call("Emulation.setDeviceMetricsOverride", width=self.size[0], height=self.size[1],
                      deviceScaleFactor=1, mobile=False)
        except BaseException:
            self._stop()
            raise
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._stop()

    def _stop(self) -> None:
        if getattr(self, "_socket", None) is not None:
            self._socket.close()
        for signal_number in (signal.SIGTERM, signal.SIGKILL):  # its whole process group: the renderers too
            try:
                os.killpg(self._process.pid, signal_number)
                self._process.wait(timeout=10)
                break
            except ProcessLookupError:
                break
            except subprocess.TimeoutExpired:
                continue
        self._profile.cleanup()

    def _debugging_port(self) -> int:
        """The port Chromium wrote to ``DevToolsActivePort`` (its first line) once it listens."""
        active = Path(self._profile.name) / "DevToolsActivePort"
        deadline = time.monotonic() + self.timeout_s
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                raise RuntimeError(f"{self.browser} exited with status {self._process.returncode} at start")
            lines = active.read_text().splitlines() if active.is_file() else []
            if lines and lines[0].isdigit():
                return int(lines[0])
            time.sleep(0.1)
        raise TimeoutError(f"{self.browser} wrote no {active.name} in {self.timeout_s} s")

    def _targets(self, port: int) -> list[dict]:
        deadline = time.monotonic() + self.timeout_s
        while True:
            targets = _get_json(port, "/json/list")
            if any(t["type"] == "page" for t in targets) or time.monotonic() > deadline:
                return targets
            time.sleep(0.1)

    def call(self, method: str, **params: Any) -> dict:
        """Send one CDP command and return its result, skipping the events that arrive meanwhile."""
        message_id = next(self._ids)
        self._socket.send(json.dumps({"id": message_id, "method": method, "params": params}))
        while True:
            reply = json.loads(self._socket.recv())
            if reply.get("id") == message_id:
                if "error" in reply:
                    raise RuntimeError(f"CDP {method} failed: {reply['error']}")
                return reply.get("result", {})

    def navigate(self, url: str) -> None:
        self.call("Page.enable")
        self.call("Page.navigate", url=url)

    def evaluate(self, expression: str) -> Any:
        """The value of a JavaScript expression in the page (awaited when it is a promise)."""
        result = self.call("Runtime.evaluate", expression=expression, returnByValue=True, awaitPromise=True)
        if "exceptionDetails" in result:
            raise RuntimeError(f"the page's script failed: {result['exceptionDetails'].get('text')}: "
                               f"{result['exceptionDetails'].get('exception', {}).get('description')}")
        return result.get("result", {}).get("value")

    def visible_text(self) -> list[str]:
        return self.evaluate(VISIBLE_TEXT) or []

    def screenshot(self, png: str | Path) -> None:
        """Save the viewport, as it is now, to ``png``."""
        data = self.call("Page.captureScreenshot", format="png", captureBeyondViewport=False)["data"]
        Path(png).write_bytes(base64.b64decode(data))
