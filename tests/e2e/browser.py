"""A real browser for the dashboard's tests: Debian's headless Chromium, driven by Selenium through
Debian's ChromeDriver (no browser download), trusting exactly the dashboard's key (its SPKI pin),
not every certificate. Screenshots go to the test artifacts folder ($VDCOS_TEST_ARTIFACTS, else
artifacts/ in the repository), one PNG per view."""
from __future__ import annotations

import base64
import hashlib
import os
import ssl
import time
import urllib.parse
from pathlib import Path
from typing import Any, Callable

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from selenium import webdriver
from selenium.common.exceptions import StaleElementReferenceException, WebDriverException
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webelement import WebElement

from vdcos.process import alive, stop_pid

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
DESKTOP = (1280, 800)
PHONE = (390, 844)
ARTIFACTS = Path(os.environ.get("VDCOS_TEST_ARTIFACTS") or Path(__file__).resolve().parents[2] / "artifacts")


def spki_pin(url: str) -> str:
    """base64(SHA-256(SubjectPublicKeyInfo)) of the certificate `url`'s server presents."""
    u = urllib.parse.urlsplit(url)
    pem = ssl.get_server_certificate((u.hostname or "127.0.0.1", u.port or 443))
    spki = x509.load_pem_x509_certificate(pem.encode()).public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    return base64.b64encode(hashlib.sha256(spki).digest()).decode()


class Browser:
    def __init__(self, url: str, profile: Path, shots: Path) -> None:
        self.url = url.split("#")[0]
        self.shots = shots
        shots.mkdir(parents=True, exist_ok=True)
        o = webdriver.ChromeOptions()
        o.binary_location = CHROMIUM
        # The flags this machine's Chromium needs (no sandbox as root, no calls home: the
        # machine's network is closed and refused connections would fill the log).
        for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                     "--disable-background-networking", "--disable-component-update", "--disable-sync",
                     "--disable-dev-shm-usage", f"--user-data-dir={profile}",
                     f"--window-size={DESKTOP[0]},{DESKTOP[1]}"):
            o.add_argument(flag)
        if self.url.startswith("https:"):
            o.add_argument(f"--ignore-certificate-errors-spki-list={spki_pin(self.url)}")
        o.set_capability("goog:loggingPrefs", {"browser": "ALL"})
        self.service = Service(CHROMEDRIVER, log_output=str(profile.parent / "chromedriver.log"))
        self.driver = webdriver.Chrome(options=o, service=self.service)
        self.driver.set_page_load_timeout(30)
        self.view(*DESKTOP)

    def view(self, width: int, height: int) -> None:
        """The page's viewport, exactly (a window's size includes what a browser draws around it)."""
        self.driver.execute_cdp_cmd("Emulation.setDeviceMetricsOverride", {
            "width": width, "height": height, "deviceScaleFactor": 1, "mobile": width < 600})
        self.size = (width, height)

    def open(self, route: str = "") -> None:
        self.driver.get(self.url + (f"#/{route}" if route else ""))

    def go(self, route: str) -> None:
        """Within the page, as a click on a link does: no reload."""
        self.driver.execute_script("location.hash = arguments[0]", f"#/{route}")

    # The pages redraw what they show every 1.5 s: reads go through one script each (whole, never
    # half of one drawing and half of the next), clicks look their element up again until it holds.
    def find(self, css: str) -> list[WebElement]:
        return self.driver.find_elements(By.CSS_SELECTOR, css)

    def one(self, css: str) -> WebElement:
        return self.driver.find_element(By.CSS_SELECTOR, css)

    def count(self, css: str) -> int:
        return int(self.driver.execute_script("return document.querySelectorAll(arguments[0]).length", css))

    def text(self, css: str) -> str:
        return str(self.driver.execute_script(
            "return Array.from(document.querySelectorAll(arguments[0])).map(e => e.innerText).join(' | ')", css))

    def attr(self, css: str, name: str) -> str | None:
        got = self.driver.execute_script(
            "const e = document.querySelector(arguments[0]); return e ? e.getAttribute(arguments[1]) : null", css, name)
        return None if got is None else str(got)

    def click(self, css: str, label: str = "", timeout: float = 20.0) -> None:
        """The element matching `css` (and showing `label`, if given)."""
        def attempt() -> bool:
            for e in self.find(css):
                if not label or e.text == label:
                    e.click()
                    return True
            return False
        self.wait(attempt, timeout, what=f"{css} {label}".strip())

    def wait(self, pred: Callable[[], Any], timeout: float = 20.0, every: float = 0.1, what: str = "") -> Any:
        deadline = time.monotonic() + timeout
        while True:
            try:
                got = pred()
            except (StaleElementReferenceException, WebDriverException):
                got = None
            if got:
                return got
            if time.monotonic() > deadline:
                self.shot("timeout-" + (what or "wait").replace(" ", "-"))
                raise AssertionError(f"the page did not show {what or 'what was awaited'} in {timeout:.0f} s; "
                                     f"it shows: {self.text('main')[:1500]!r}")
            time.sleep(every)

    def shot(self, name: str) -> Path:
        path = self.shots / f"{name}-{self.size[0]}x{self.size[1]}.png"
        self.driver.save_screenshot(str(path))
        return path

    def overflows(self) -> bool:
        """Whether the page scrolls sideways (a table may, in its own box; the page may not)."""
        return bool(self.driver.execute_script(
            "return document.documentElement.scrollWidth > window.innerWidth + 1"))

    def errors(self) -> list[str]:
        """What the page's scripts threw or failed to load, from the browser's console. Refused
        API calls are not among them: the page shows those (and the tests look for them)."""
        return [e["message"] for e in self.driver.get_log("browser") if e["level"] == "SEVERE"
                and not (e.get("source") == "network" and "/api/" in e["message"])]

    def close(self) -> None:
        pid = self.service.process.pid if self.service.process else 0
        try:
            self.driver.quit()
        finally:
            if pid and alive(pid):
                stop_pid(pid)
