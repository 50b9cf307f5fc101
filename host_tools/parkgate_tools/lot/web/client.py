"""A client of the lot's web application, for tests and benchmarks (no
browser): it logs in through POST /login, keeps the session cookie (Secure,
as the app sets it, sent over http://127.0.0.1 as browsers do), and posts
forms and JSON with the session's CSRF token, taken from the last page
that held one."""
import http.cookiejar
import json
import re
import urllib.error
import urllib.parse
import urllib.request

CSRF = re.compile(r'name="csrf" value="([^"]+)"')


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, req, fp, code, msg, headers, newurl):
        return None


class WebClient:
    """A browser-like session on base_url (ending in "/"). follow=False:
    a 303 is returned as it is, not followed."""

    def __init__(self, base_url, follow=True):
        self.base = base_url
        self.cookies = http.cookiejar.CookieJar(http.cookiejar.DefaultCookiePolicy(
            secure_protocols=("https", "wss", "http")))
        handlers = [urllib.request.HTTPCookieProcessor(self.cookies)]
        if not follow:
            handlers.append(_NoRedirect())
        self.opener = urllib.request.build_opener(*handlers)
        self.csrf = None

    def request(self, method, path, data=None, headers=None, timeout=10):
        """(status, headers, body text) of one request; HTTP errors too."""
        request = urllib.request.Request(self.base + path.lstrip("/"), data=data, method=method,
                                         headers=headers or {})
        try:
            with self.opener.open(request, timeout=timeout) as response:
                status, head, body = response.status, response.headers, response.read()
        except urllib.error.HTTPError as error:
            status, head, body = error.code, error.headers, error.read()
        text = body.decode("utf-8", "replace")
        found = CSRF.search(text)
        if found:
            self.csrf = found.group(1)
        return status, head, text

    def get(self, path, **kw):
        return self.request("GET", path, **kw)

    def login(self, name, password):
        """Log in through the login form; returns the status of the answer."""
        self.get("login")
        return self.post("login", {"username": name, "password": password})[0]

    def post(self, path, fields, csrf=True, headers=None, timeout=10):
        """POST a url-encoded form (with the session's csrf unless csrf=False)."""
        fields = dict(fields, **({"csrf": self.csrf} if csrf and self.csrf else {}))
        return self.request("POST", path, urllib.parse.urlencode(fields).encode(),
                            dict({"Content-Type": "application/x-www-form-urlencoded"},
                                 **(headers or {})), timeout=timeout)

    def post_json(self, path, doc, csrf=True):
        """POST a JSON document (with X-CSRF-Token unless csrf=False); (status, parsed body)."""
        headers = {"Content-Type": "application/json"}
        if csrf and self.csrf:
            headers["X-CSRF-Token"] = self.csrf
        status, _, text = self.request("POST", path, json.dumps(doc).encode(), headers)
        return status, json.loads(text) if text.startswith(("{", "[")) else text

    def get_json(self, path):
        """The JSON document at path; RuntimeError unless the answer is 200."""
        status, _, text = self.get(path)
        if status != 200:
            raise RuntimeError("GET %s: %d %s" % (path, status, text[:300]))
        return json.loads(text)
