"""The report in a real browser: headless Chromium (Debian's `chromium`) opens the page from a file at a desktop
(1400 px) and a phone (400 px) width, logs no console error, renders every chart with a non-zero size, shows the
headline first, needs no sideways scrolling, keeps the SQL-conversion column on screen, shows every cell of the
backtest-trend and plan sections after the headline and on screen, and saves a screenshot.

The browser is driven over the DevTools protocol on a pipe (--remote-debugging-pipe: JSON messages separated by
NUL bytes on file descriptors 3 and 4), so no websocket client is needed and no port is opened.
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest

CHROMIUM = Path("/usr/bin/chromium")
pytestmark = pytest.mark.skipif(
    not CHROMIUM.exists(),
    reason="needs Debian's chromium at /usr/bin/chromium: `apt-get install chromium` "
    "(.ci/run installs it on CI; no browser is ever downloaded)",
)


class DevTools:
    """A minimal DevTools-protocol client over Chromium's debugging pipe."""

    def __init__(self, user_data: Path) -> None:
        to_browser_r, self._write = os.pipe()
        self._read, from_browser_w = os.pipe()
        os.set_inheritable(to_browser_r, True)
        os.set_inheritable(from_browser_w, True)
        args = [
            str(CHROMIUM),
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-background-networking",
            "--no-first-run",
            "--no-default-browser-check",
            f"--user-data-dir={user_data}",
            "--remote-debugging-pipe",
            "--window-size=1280,900",
        ]

        def fds() -> None:  # runs in the child: the protocol wants the pipe on fds 3 (in) and 4 (out)
            os.dup2(to_browser_r, 3)
            os.dup2(from_browser_w, 4)

        # close_fds=False: the child's fds 3 and 4 are set by `fds`, after which Popen would close them otherwise
        self.proc = subprocess.Popen(
            args,
            preexec_fn=fds,
            close_fds=False,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        os.set_inheritable(self._write, False)
        os.set_inheritable(self._read, False)
        os.close(to_browser_r)
        os.close(from_browser_w)
        self._buffer = b""
        self._next_id = 0
        self.events: list[dict[str, Any]] = []

    def _message(self, timeout: float) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while b"\0" not in self._buffer:
            if time.monotonic() > deadline:
                raise TimeoutError("no message from chromium")
            chunk = os.read(self._read, 1 << 16)
            if not chunk:
                raise RuntimeError("chromium closed the debugging pipe")
            self._buffer += chunk
        raw, self._buffer = self._buffer.split(b"\0", 1)
        return json.loads(raw)

    def call(
        self, method: str, params: dict[str, Any] | None = None, session: str | None = None, timeout: float = 30.0
    ) -> dict[str, Any]:
        """Send one command and wait for its answer, keeping the events that arrive meanwhile."""
        self._next_id += 1
        message: dict[str, Any] = {"id": self._next_id, "method": method, "params": params or {}}
        if session:
            message["sessionId"] = session
        os.write(self._write, json.dumps(message).encode() + b"\0")
        while True:
            reply = self._message(timeout)
            if reply.get("id") == self._next_id:
                if "error" in reply:
                    raise RuntimeError(f"{method}: {reply['error']}")
                return reply.get("result", {})
            self.events.append(reply)

    def wait_for(self, method: str, timeout: float = 30.0) -> dict[str, Any]:
        """The first event of that method (already received or still to come)."""
        for event in self.events:
            if event.get("method") == method:
                return event
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            event = self._message(deadline - time.monotonic())
            self.events.append(event)
            if event.get("method") == method:
                return event
        raise TimeoutError(method)

    def close(self) -> None:
        """Ask the browser to quit, then make sure it did."""
        with contextlib.suppress(RuntimeError, TimeoutError, OSError):
            self.call("Browser.close", timeout=5)
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        os.close(self._write)
        os.close(self._read)


CHECK_JS = """(function () {
function top(e) { return e ? e.getBoundingClientRect().top : null; }
return JSON.stringify({
  charts: Array.from(document.querySelectorAll("figure.chart")).map(function (f) {
    var g = f.querySelector("svg, img"); var r = g ? g.getBoundingClientRect() : {width: 0, height: 0};
    return {name: f.dataset.chart, width: r.width, height: r.height,
            marks: g ? g.querySelectorAll("path, rect, line, polyline").length : 0};
  }),
  conversion: Array.from(document.querySelectorAll("#agreement td[data-col=conversion]")).map(function (td) {
    var r = td.getBoundingClientRect();
    return {text: td.textContent.trim(), left: r.left, right: r.right, width: r.width, height: r.height,
            display: getComputedStyle(td).display, visibility: getComputedStyle(td).visibility};
  }),
  sections: ["backtest", "plan"].map(function (id) {
    var s = document.getElementById(id);
    var tds = s ? Array.from(s.querySelectorAll("td")).filter(function (td) { return td.textContent.trim(); }) : [];
    var r = tds.map(function (td) { return td.getBoundingClientRect(); }).filter(function (b) { return b.width > 0; });
    return {id: id, top: top(s), cells: tds.length, shown: r.length,
            left: Math.min.apply(null, r.map(function (b) { return b.left; })),
            right: Math.max.apply(null, r.map(function (b) { return b.right; }))};
  }),
  headlineTop: top(document.getElementById("headline")),
  firstTableTop: top(document.querySelector("table")),
  scrollWidth: document.documentElement.scrollWidth, clientWidth: document.documentElement.clientWidth,
  innerWidth: window.innerWidth,
  tables: document.querySelectorAll("table").length
});
})()"""


def _errors(events: list[dict[str, Any]]) -> list[str]:
    out = []
    for event in events:
        method, params = event.get("method"), event.get("params", {})
        if method == "Runtime.exceptionThrown":
            details = params.get("exceptionDetails", {})
            out.append(str(details.get("exception", {}).get("description") or details.get("text", ""))[:500])
        elif method == "Runtime.consoleAPICalled" and params.get("type") in ("error", "assert"):
            out.append(json.dumps(params.get("args", []))[:500])
        elif method == "Log.entryAdded" and params.get("entry", {}).get("level") == "error":
            out.append(params["entry"].get("text", "")[:500])
    return out


def open_in_browser(page: Path, tmp_path: Path, width: int = 1280) -> tuple[dict[str, Any], list[str], list[str]]:
    """Load the page `width` CSS pixels wide (below 600: as a phone); return the layout check, the console errors
    and the resources it requested; the screenshot goes to tmp_path/report-<width>.png."""
    tools = DevTools(tmp_path / "chromium-profile")
    try:
        target = tools.call("Target.createTarget", {"url": "about:blank"})["targetId"]
        session = tools.call("Target.attachToTarget", {"targetId": target, "flatten": True})["sessionId"]
        for domain in ("Page", "Runtime", "Log", "Network"):
            tools.call(f"{domain}.enable", session=session)
        tools.call(
            "Emulation.setDeviceMetricsOverride",
            {"width": width, "height": 900, "deviceScaleFactor": 1, "mobile": width < 600},
            session=session,
        )
        tools.call("Page.navigate", {"url": page.resolve().as_uri()}, session=session)
        tools.wait_for("Page.loadEventFired")
        checked = tools.call("Runtime.evaluate", {"expression": CHECK_JS, "returnByValue": True}, session=session)
        result = json.loads(checked["result"]["value"])
        shot = tools.call("Page.captureScreenshot", {"format": "png", "captureBeyondViewport": True}, session=session)
        (tmp_path / f"report-{width}.png").write_bytes(base64.b64decode(shot["data"]))
        requested = [
            e["params"]["request"]["url"] for e in tools.events if e.get("method") == "Network.requestWillBeSent"
        ]
        return result, _errors(tools.events), requested
    finally:
        tools.close()


@pytest.fixture(scope="module")
def tiny_report(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from tests.unit.report.report_frames import extra_sections, tiny_page

    page = tmp_path_factory.mktemp("report") / "mql_comparison.html"
    page.write_text(tiny_page(**extra_sections()), encoding="utf-8")  # with the backtest trend and the plan
    return page


@pytest.mark.slow
@pytest.mark.parametrize("width", [1400, 400])
def test_the_report_renders_in_headless_chromium_without_errors(tiny_report: Path, tmp_path: Path, width: int) -> None:
    result, errors, requested = open_in_browser(tiny_report, tmp_path, width)

    assert errors == []
    assert [u for u in requested if u != tiny_report.resolve().as_uri()] == []  # nothing fetched but the page itself
    assert sorted(c["name"] for c in result["charts"]) == ["agreement", "capture", "grades", "lift", "tradeoff"]
    for chart in result["charts"]:
        assert chart["width"] > 100 and chart["height"] > 100 and chart["marks"] > 10, chart
    assert result["innerWidth"] == width
    assert result["scrollWidth"] <= result["innerWidth"], "the page scrolls sideways"
    assert result["headlineTop"] < result["firstTableTop"], "the headline comes before any table"
    assert len(result["conversion"]) == 4  # the 2x2's SQL-conversion column: one cell per cell of the 2x2
    for cell in result["conversion"]:
        assert cell["text"].endswith("%") and cell["display"] != "none" and cell["visibility"] == "visible", cell
        assert cell["width"] > 0 and cell["height"] > 0 and cell["left"] >= 0 and cell["right"] <= width, cell
    assert result["tables"] >= 8
    # the backtest trend and the plan follow the headline, every non-empty cell shown and on screen (cards
    # on a phone hide empty cells)
    for section in result["sections"]:
        assert section["top"] is not None and section["top"] > result["headlineTop"], section
        assert section["cells"] > 0 and section["shown"] == section["cells"], section
        assert section["left"] >= 0 and section["right"] <= width, section
    shot = tmp_path / f"report-{width}.png"
    assert shot.stat().st_size > 10_000 and shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.slow
def test_a_too_wide_table_would_be_caught(tmp_path: Path) -> None:
    """The width check above can fail: a page wider than a phone is reported."""
    page = tmp_path / "wide.html"
    page.write_text(
        '<!DOCTYPE html><html><head><meta name="viewport" content="width=device-width, initial-scale=1"></head>'
        '<body><p id="headline">x</p><table id="agreement"><tr><td data-col="conversion" style="min-width:900px">'
        "1%</td></tr></table></body></html>"
    )

    result, _, _ = open_in_browser(page, tmp_path, 400)

    # a phone's browser widens its layout viewport to the content: the page is wider than the 400 px screen
    assert result["scrollWidth"] > 400 and result["conversion"][0]["right"] > 400


def test_a_script_error_would_be_caught(tmp_path: Path) -> None:
    """The check above can fail: a page that throws is reported."""
    page = tmp_path / "broken.html"
    page.write_text("<!DOCTYPE html><html><body><p>x</p><script>undefinedFunction();</script></body></html>")

    _, errors, _ = open_in_browser(page, tmp_path)

    assert errors and "undefinedFunction" in " ".join(errors)
