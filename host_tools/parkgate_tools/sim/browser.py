"""Headless Chromium for the tests and the demo: Debian's chromium and
chromium-driver driven through the W3C WebDriver HTTP API with urllib (no
Selenium, nothing to install from PyPI).

    with Browser() as browser:
        browser.log_in(url, "ana", "secret")
        browser.text("#inside")
        browser.screenshot("/tmp/dashboard.png")

Elements are WebDriver element ids (strings), found by CSS selector."""
import base64
import json
import shutil
import subprocess
import tempfile
import threading
import urllib.error
import urllib.request

from parkgate_tools.sim.broker import free_port
from parkgate_tools.sim.waiting import wait_until

CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                  "--no-first-run", "--disable-background-networking",
                  "--disable-component-update", "--disable-sync", "--disable-dev-shm-usage",
                  "--hide-scrollbars"]
ELEMENT = "element-6066-11e4-a52e-4f735466cecf"   # the W3C web element key
WINDOW = (1280, 900)
TALLEST_PX = 4000     # a full-page screenshot is cut here
MAX_ANSWER_BYTES = 64 << 20   # a full-page screenshot of a long page stays well below
MAX_SCRIPT_CHARS = 64 << 10
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


class BrowserMissing(RuntimeError):
    """chromium or chromedriver is not installed."""


class WebDriverError(RuntimeError):
    """chromedriver answered with an error (its W3C error code and message)."""

    def __init__(self, code, message):
        super().__init__("%s: %s" % (code, message))
        self.code = code


class NoSuchElement(LookupError):
    """No element on the page matches the CSS selector."""


def find_chromium():
    """(chromium, chromedriver) paths, or raise BrowserMissing saying how to
    install them."""
    binary, driver = shutil.which("chromium"), shutil.which("chromedriver")
    if not binary or not driver:
        raise BrowserMissing("chromium and chromium-driver are not installed: "
                             "run host_tools/setup_system.sh (as root)")
    return binary, driver


class Browser:
    """One headless Chromium, driven through its own chromedriver process on
    a free port, with a throwaway profile. Calls are serialised (one lock),
    so a test may use it from a watcher thread too. Stop it with close(), or
    use it as a context manager."""

    def __init__(self, window=WINDOW, timeout=60):
        binary, driver = find_chromium()
        self.timeout = timeout
        self.lock = threading.RLock()
        self.profile = tempfile.mkdtemp(prefix="parkgate-chromium-")
        port = free_port()
        self.base = "http://127.0.0.1:%d" % port
        self.driver = subprocess.Popen([driver, "--port=%d" % port],
                                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        self.session = None
        try:
            wait_until(self._ready, 20, "chromedriver to listen", every=0.05)
            options = {"binary": binary, "args": CHROMIUM_FLAGS + [
                "--user-data-dir=" + self.profile, "--window-size=%d,%d" % window]}
            self.session = self._call("POST", "/session", {"capabilities": {"alwaysMatch": {
                "browserName": "chrome", "goog:chromeOptions": options}}})["sessionId"]
            self.set_window_size(*window)
        except BaseException:
            self._stop_driver()
            raise

    # ---- the protocol ----

    def _ready(self):
        try:
            return self._call("GET", "/status")["ready"]
        except (OSError, WebDriverError):
            return False

    def _call(self, method, path, body=None):
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(self.base + path, data=data, method=method,
                                         headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as response:
                raw = response.read(MAX_ANSWER_BYTES + 1)
        except urllib.error.HTTPError as failed:
            raw = failed.read(MAX_ANSWER_BYTES + 1)
            try:
                value = json.loads(raw)["value"]
                code, message = value["error"], value.get("message", "")
            except (ValueError, KeyError, TypeError):
                code, message = "http %d" % failed.code, raw[:200].decode("utf-8", "replace")
            raise WebDriverError(code, message.splitlines()[0] if message else "") from None
        if len(raw) > MAX_ANSWER_BYTES:
            raise WebDriverError("answer too large", "over %d bytes" % MAX_ANSWER_BYTES)
        return json.loads(raw)["value"]

    def _session(self, method, path, body=None):
        with self.lock:
            return self._call(method, "/session/%s%s" % (self.session, path), body)

    # ---- pages ----

    def get(self, url):
        """Load url and wait until the page has loaded."""
        self._session("POST", "/url", {"url": url})

    def current_url(self):
        """The address of the page shown."""
        return self._session("GET", "/url")

    def title(self):
        """The page's title."""
        return self._session("GET", "/title")

    def source(self):
        """The page's HTML as the browser has it now."""
        return self._session("GET", "/source")

    def execute(self, script, *args):
        """Run a script's body in the page (arguments as `arguments[i]`,
        elements as element ids) and return what it returns; a Promise is
        waited for."""
        if len(script) > MAX_SCRIPT_CHARS:
            raise ValueError("script over %d characters" % MAX_SCRIPT_CHARS)
        wrapped = [{ELEMENT: a} if isinstance(a, _Element) else a for a in args]
        return self._session("POST", "/execute/sync", {"script": script, "args": wrapped})

    def response_status(self):
        """The HTTP status of the page's own load (Navigation Timing)."""
        return self.execute("const n = performance.getEntriesByType('navigation');"
                            "return n.length ? n[0].responseStatus : null;")

    # ---- elements ----

    def find_all(self, css, within=None):
        """Element ids matching a CSS selector (inside element `within`)."""
        path = "/element/%s/elements" % within if within else "/elements"
        found = self._session("POST", path, {"using": "css selector", "value": css})
        return [_Element(e[ELEMENT]) for e in found]

    def find(self, css, within=None):
        """The first element matching css; NoSuchElement if there is none."""
        found = self.find_all(css, within)
        if not found:
            raise NoSuchElement("no element %s on %s" % (css, self.current_url()))
        return found[0]

    def wait_for(self, css, timeout=10, within=None):
        """The first element matching css once there is one; TimeoutError
        naming the selector after timeout seconds."""
        found = wait_until(lambda: self.find_all(css, within), timeout,
                           "element %s" % css, every=0.05)
        return found[0]

    def text(self, css, within=None):
        """The rendered text of the first element matching css."""
        return self._session("GET", "/element/%s/text" % self.find(css, within))

    def attribute(self, element, name):
        """An element's HTML attribute, None if it has none."""
        return self._session("GET", "/element/%s/attribute/%s" % (element, name))

    def property(self, element, name):
        """An element's DOM property (e.g. "textContent", "value"), None if none."""
        return self._session("GET", "/element/%s/property/%s" % (element, name))

    def type_into(self, element, text):
        """Clear an input and type text into it."""
        self._session("POST", "/element/%s/clear" % element, {})
        self._session("POST", "/element/%s/value" % element, {"text": text})

    def click(self, element):
        """Click an element (a submit button submits its form)."""
        self._session("POST", "/element/%s/click" % element, {})

    # ---- the window, cookies, screenshots ----

    def set_window_size(self, width, height):
        """Resize the browser window (CSS pixels)."""
        self._session("POST", "/window/rect", {"width": int(width), "height": int(height)})

    def cookies(self):
        """The cookies of the page's origin, as WebDriver lists them
        ([{"name", "value", "domain", "path", "secure", "httpOnly", ...}])."""
        return self._session("GET", "/cookie")

    def delete_cookies(self):
        """Forget every cookie of the page's origin (logged out)."""
        self._session("DELETE", "/cookie")

    def screenshot(self, path, full_page=False, tallest=TALLEST_PX):
        """Write a PNG of the window's viewport to path; returns path.
        full_page: of the whole page instead (the window stretched to the
        page's height, at most `tallest` pixels, then put back)."""
        if not full_page:
            return self._write_png(path)
        with self.lock:
            rect = self._session("GET", "/window/rect")
            # the window's height less the viewport's is the browser's own frame
            page, viewport = self.execute(
                "return [Math.max(document.documentElement.scrollHeight,"
                " document.body ? document.body.scrollHeight : 0), window.innerHeight];")
            frame = rect["height"] - int(viewport or 0)
            self.set_window_size(rect["width"], min(max(int(page or 0) + frame, rect["height"]),
                                                    int(tallest)))
            try:
                return self._write_png(path)
            finally:
                self.set_window_size(rect["width"], rect["height"])

    def _write_png(self, path):
        data = base64.b64decode(self._session("GET", "/screenshot"))
        if not data.startswith(PNG_MAGIC):
            raise WebDriverError("bad screenshot", "chromedriver did not answer a PNG")
        with open(path, "wb") as f:
            f.write(data)
        return path

    # ---- the lot's web application ----

    def log_in(self, base_url, username, password, timeout=10):
        """Sign in through the login form (form#login at base_url/login)
        and wait until the browser has left the login page; returns the
        address it landed on. A refused login raises PermissionError with
        the page's p#login-error text."""
        self.get(base_url.rstrip("/") + "/login")
        form = self.wait_for("form#login", timeout)
        self.type_into(self.find("input[name=username]", within=form), username)
        self.type_into(self.find("input[name=password]", within=form), password)
        self.click(self.find("#login-submit", within=form))
        wait_until(lambda: not self.current_url().split("?")[0].endswith("/login")
                   or self.find_all("#login-error"), timeout, "the login to finish", every=0.05)
        if self.find_all("#login-error"):
            raise PermissionError("login refused for %s: %s" % (
                username, self.text("#login-error")))
        return self.current_url()

    def log_out(self):
        """Sign out through the header's form#logout, then drop the cookies."""
        forms = self.find_all("form#logout")
        if forms:
            self.execute("arguments[0].submit();", forms[0])
            wait_until(lambda: self.find_all("form#login"), 10, "the login page", every=0.05)
        self.delete_cookies()

    # ---- stopping ----

    def close(self):
        """End the session, stop chromedriver (and with it Chromium), remove
        the profile."""
        try:
            if self.session is not None:
                with self.lock:
                    self._call("DELETE", "/session/%s" % self.session)
        finally:
            self._stop_driver()

    def _stop_driver(self):
        self.driver.terminate()
        try:
            self.driver.wait(10)
        except subprocess.TimeoutExpired:
            self.driver.kill()
            self.driver.wait(10)
        shutil.rmtree(self.profile, ignore_errors=True)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


class _Element(str):
    """A WebDriver element id (a str), passed back to scripts as an element."""
