#!/usr/bin/env python3
"""Open a saefw feature report in headless Chromium and check what a reader sees, through the
DevTools protocol over --remote-debugging-pipe (standard library only: no websocket, no port).

    python3 tests/report/check_report.py --chromium PATH --report DIR --shots DIR [--label NAME]

The expected values come from the report's own data files (data/summary.js, data/shard_NNNN.js):
the table's row count is the number of live features, sorting and filtering give the rows the data
say, a feature page (#f=N, opened by clicking its row) shows its top context token by token with
the max token marked, HTML in tokens stays text, the back button returns to the index, shards are
loaded once, and a missing shard or data folder gives a message instead of a blank page. Any
JavaScript exception, console.error or error log entry fails the check. Screenshots of the index
and of a feature page go to --shots. Every wait is bounded; exit status 0 when all checks pass.
"""
import argparse
import base64
import fcntl
import json
import math
import os
import re
import select
import shutil
import subprocess
import sys
import tempfile
import time


class BrowserError(Exception):
    pass


class Browser:
    """Headless Chromium driven over the DevTools pipe: fd 3 carries commands to it, fd 4 replies
    and events, each message JSON ending in a NUL byte."""

    def __init__(self, exe, profile, log_path, width=1280, height=1000):
        to_child_r, to_child_w = os.pipe()
        from_child_r, from_child_w = os.pipe()
        # Above fd 10 first, so that moving the child's ends onto 3 and 4 cannot overwrite one another.
        hi = [fcntl.fcntl(fd, fcntl.F_DUPFD_CLOEXEC, 10) for fd in (to_child_r, from_child_w)]
        for fd in (to_child_r, from_child_w):
            os.close(fd)

        def child_fds():
            os.dup2(hi[0], 3)
            os.dup2(hi[1], 4)

        args = [exe, "--headless", "--remote-debugging-pipe", "--user-data-dir=" + profile,
                "--no-first-run", "--no-default-browser-check", "--disable-gpu",
                "--disable-dev-shm-usage", "--disable-extensions", "--disable-background-networking",
                "--disable-component-update", "--disable-sync", "--mute-audio", "--hide-scrollbars",
                "--window-size=%d,%d" % (width, height), "about:blank"]
        if os.geteuid() == 0:
            args.append("--no-sandbox")
        self.log = open(log_path, "wb")
        self.proc = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=self.log, stderr=self.log,
                                     preexec_fn=child_fds, pass_fds=(3, 4))
        for fd in hi:
            os.close(fd)
        self.wfd, self.rfd = to_child_w, from_child_r
        self.buf = b""
        self.next_id = 0
        self.session = None
        self.errors = []
        self.width, self.height = width, height

    def _read(self, deadline):
        while b"\0" not in self.buf:
            left = deadline - time.monotonic()
            if left <= 0:
                raise BrowserError("no answer from chromium in time")
            ready, _, _ = select.select([self.rfd], [], [], left)
            if ready:
                chunk = os.read(self.rfd, 1 << 20)
                if not chunk:
                    raise BrowserError("chromium closed the DevTools pipe (exit status %s)" % self.proc.poll())
                self.buf += chunk
        msg, _, self.buf = self.buf.partition(b"\0")
        return json.loads(msg)

    def _event(self, m):
        method, p = m.get("method"), m.get("params", {})
        if method == "Runtime.exceptionThrown":
            d = p.get("exceptionDetails", {})
            desc = d.get("exception", {}).get("description") or d.get("text")
            self.errors.append("exception: %s (%s:%s)" % (desc, d.get("url", "?"), d.get("lineNumber")))
        elif method == "Runtime.consoleAPICalled" and p.get("type") in ("error", "assert"):
            text = " ".join(str(a.get("value", a.get("description", ""))) for a in p.get("args", []))
            self.errors.append("console.%s: %s" % (p.get("type"), text))
        elif method == "Log.entryAdded" and p.get("entry", {}).get("level") == "error":
            e = p["entry"]
            self.errors.append("log: %s %s" % (e.get("text"), e.get("url", "")))

    def send(self, method, params=None, timeout=15, session=True):
        self.next_id += 1
        msg = {"id": self.next_id, "method": method, "params": params or {}}
        if session and self.session:
            msg["sessionId"] = self.session
        data = json.dumps(msg).encode() + b"\0"
        while data:
            data = data[os.write(self.wfd, data):]
        deadline = time.monotonic() + timeout
        while True:
            m = self._read(deadline)
            if m.get("id") == self.next_id:
                if "error" in m:
                    raise BrowserError("%s: %s" % (method, m["error"].get("message")))
                return m.get("result", {})
            self._event(m)

    def open_page(self):
        target = self.send("Target.createTarget", {"url": "about:blank"}, session=False)["targetId"]
        self.session = self.send("Target.attachToTarget", {"targetId": target, "flatten": True},
                                 session=False)["sessionId"]
        for domain in ("Runtime", "Log", "Page"):
            self.send(domain + ".enable")
        self.viewport(self.height)

    def viewport(self, height):
        self.send("Emulation.setDeviceMetricsOverride",
                  {"width": self.width, "height": int(height), "deviceScaleFactor": 1, "mobile": False})

    def eval(self, expr, timeout=15):
        r = self.send("Runtime.evaluate", {"expression": expr, "returnByValue": True,
                                           "awaitPromise": True}, timeout=timeout)
        if "exceptionDetails" in r:
            d = r["exceptionDetails"]
            raise BrowserError("evaluating %r: %s" % (expr[:80], d.get("exception", {}).get("description", d.get("text"))))
        return r.get("result", {}).get("value")

    def wait(self, expr, timeout=15):
        """Poll expr until it is truthy; returns its value, or raises after timeout seconds."""
        deadline, last = time.monotonic() + timeout, ""
        while True:
            try:
                v = self.eval(expr)
            except BrowserError as e:           # e.g. no document.body yet while a page loads
                v, last = None, " (last: %s)" % e
            if v:
                return v
            if time.monotonic() > deadline:
                raise BrowserError("timed out after %gs waiting for: %s%s" % (timeout, expr, last))
            time.sleep(0.05)

    def navigate(self, url):
        self.send("Page.navigate", {"url": url})

    def screenshot(self, path, full_height=None):
        if full_height:
            self.viewport(full_height)
            time.sleep(0.2)
        png = base64.b64decode(self.send("Page.captureScreenshot", {"format": "png"}, timeout=30)["data"])
        with open(path, "wb") as fh:
            fh.write(png)
        if full_height:
            self.viewport(self.height)

    def close(self):
        try:
            self.send("Browser.close", session=False, timeout=5)
        except (BrowserError, OSError):
            pass
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=10)
        for fd in (self.wfd, self.rfd):
            os.close(fd)
        self.log.close()


# ---- the report's data, read independently of the viewer ----

def load_data(path, kind):
    with open(path, encoding="utf-8") as fh:
        text = fh.read().strip()
    m = re.match(r"saefwReport\.%s\(\s*(?:(\d+)\s*,\s*)?" % kind, text)
    if not m or not text.endswith(");") and not text.endswith(")"):
        raise ValueError("%s: not a saefwReport.%s(...) call" % (path, kind))
    body = text[m.end():]
    body = body[:-2] if body.endswith(");") else body[:-1]
    return json.loads(body)


def visible(tok):
    """A token as the spec says a reader sees it: whitespace and controls as visible marks."""
    s, out, k = str(tok), [], 0
    marks = {" ": "·", "\n": "↵", "\t": "→", "\u00a0": "⍽", "\r": "\\r"}
    while k < len(s):
        ch, c = s[k], ord(s[k])
        if re.match(r"\\x[0-9a-fA-F]{2}", s[k:k + 4]):
            out.append(s[k:k + 4])
            k += 4
            continue
        if ch in marks:
            out.append(marks[ch])
        elif c < 0x20 or c == 0x7F:
            out.append("\\x%02x" % c)
        elif 0x80 <= c <= 0x9F or 0x200B <= c <= 0x200F or 0x2028 <= c <= 0x202E or \
                0x2060 <= c <= 0x2069 or c in (0xFEFF, 0xAD):
            out.append("\\u%04x" % c)
        else:
            out.append(ch)
        k += 1
    return "".join(out) or "∅"


class Checker:
    def __init__(self, label):
        self.label, self.failures, self.passed = label, [], 0

    def check(self, ok, what, detail=""):
        if ok:
            self.passed += 1
        else:
            self.failures.append(what + (": " + detail if detail else ""))
            print("  FAIL %s%s" % (what, ": " + detail if detail else ""), flush=True)

    def errors(self, browser, allowed=None):
        """Fail on JavaScript errors seen since the last call (except those matching allowed)."""
        errs = [e for e in browser.errors if not (allowed and re.search(allowed, e))]
        browser.errors = []
        self.check(not errs, "no JavaScript errors", "; ".join(errs)[:2000])


def check_top_context(b, c, target, how):
    """The open feature page shows target's top context: its tokens as text, the max token marked
    and boxed, each token's activation on hover, the firing tokens highlighted."""
    ex = target["examples"][0]
    got = b.eval("[...document.querySelectorAll('#feature-view .examples.top .ex')[0].querySelectorAll('.ctx > .tok')].map(t => t.textContent)")
    want = [visible(t) for t in ex["tokens"]]
    c.check(got == want, how + "top context shows the right tokens", "%r != %r" % (got, want))
    mx = b.eval("(() => { const toks = [...document.querySelectorAll('#feature-view .examples.top .ex')[0].querySelectorAll('.ctx > .tok')]; "
                "const m = toks.filter(t => t.classList.contains('max')); "
                "return [m.length, toks.indexOf(m[0]), m[0] && m[0].textContent, m[0] && m[0].title, "
                "toks.map(t => t.style.backgroundColor !== ''), m[0] && getComputedStyle(m[0]).outlineStyle] })()")
    c.check(mx[0] == 1 and mx[1] == ex["pos"] and mx[2] == visible(ex["tokens"][ex["pos"]]),
            how + "the max token is marked at pos %d" % ex["pos"], str(mx[:3]))
    c.check(bool(mx[3]) and mx[3].startswith("activation "), how + "hovering a token shows its activation", repr(mx[3]))
    c.check(mx[4] == [float(a) > 0 for a in ex["acts"]], how + "tokens with activation > 0 are highlighted", str(mx[4]))
    c.check(mx[5] not in (None, "none"), how + "the max token is boxed", str(mx[5]))


def url_of(folder, frag=""):
    return "file://" + os.path.abspath(os.path.join(folder, "index.html")) + frag


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--chromium", required=True)
    ap.add_argument("--report", required=True, help="report folder (index.html, data/)")
    ap.add_argument("--shots", required=True, help="folder for the screenshots")
    ap.add_argument("--label", default="report", help="prefix of the screenshot names")
    ap.add_argument("--max_sort_ms", type=float, default=250.0)
    args = ap.parse_args()

    rep = os.path.abspath(args.report)
    summary = load_data(os.path.join(rep, "data", "summary.js"), "summary")
    feats = summary["features"]
    d_sae, shard_size = len(feats), summary["shard_size"]
    live = [f for f in feats if f["density"] > 0]
    dead = [f for f in feats if not f["density"] > 0]
    ids_only = summary.get("tokenizer") is None
    os.makedirs(args.shots, exist_ok=True)

    # The feature to open: the first live one whose top context holds HTML, else the first live one.
    target, target_shard = None, None
    for s in range(summary["n_shards"]):
        sh = load_data(os.path.join(rep, "data", "shard_%04d.js" % s), "shard")
        for f in sh["features"]:
            if f["density"] > 0 and f.get("examples"):
                if target is None or ("<" in "".join(map(str, f["examples"][0]["tokens"]))
                                      and "<" not in "".join(map(str, target["examples"][0]["tokens"]))):
                    target, target_shard = f, s
        if target is not None and "<" in "".join(map(str, target["examples"][0]["tokens"])):
            break
    print("%s: %d features, %d live, %d dead, %d shards; feature page: #%s" %
          (args.label, d_sae, len(live), len(dead), summary["n_shards"], target["i"] if target else None))

    c = Checker(args.label)
    tmp = tempfile.mkdtemp(prefix="saefw-report-check-")
    b = Browser(args.chromium, os.path.join(tmp, "profile"), os.path.join(args.shots, args.label + "-chromium.log"))
    try:
        b.open_page()

        # ---- the index ----
        t0 = time.monotonic()
        b.navigate(url_of(rep))
        state = b.wait("document.readyState === 'complete' && document.body.dataset.state !== 'loading' && document.body.dataset.state")
        load_ms = 1000 * (time.monotonic() - t0)
        summary_ms = b.eval("saefwReport.timing.summary_ms") or -1
        c.check(state == "ready", "index drawn", "state %s, message %r" % (state, b.eval("document.getElementById('message').innerText")))
        rows = b.eval("+document.getElementById('features').dataset.rows")
        c.check(rows == len(live), "table rows (all pages) = live features", "%s != %d" % (rows, len(live)))
        drawn = b.eval("[...document.querySelectorAll('#features tbody tr[data-feature]')].map(r => +r.dataset.feature)")
        c.check(len(drawn) > 0 and drawn[:3] == [f["i"] for f in live[:3]], "first rows in feature order", str(drawn[:3]))
        c.check(len(drawn) < 200, "only the rows in view are in the DOM", "%d rows" % len(drawn))
        head = b.eval("document.getElementById('top').innerText")
        for key in ("hook_name", "checkpoint"):
            c.check(str(summary["sae"][key]) in head, "header shows the " + key, head[:300])
        dh = summary["density_histogram"]
        bars = b.eval("document.querySelectorAll('#density svg rect.bar').length")
        c.check(bars == len(dh["counts"]) + 1, "density histogram: one bar per bin plus the dead bar", str(bars))
        dead_bar = b.eval("(() => { const r = document.querySelector('#density svg rect.bar.dead'); "
                          "const l = document.querySelector('#density svg text.dead-label'); "
                          "return r && l ? [l.textContent, r.textContent, +r.getAttribute('height')] : null })()")
        c.check(bool(dead_bar) and dead_bar[0] == "dead" and ("%d dead" % dh["dead"]) in dead_bar[1].replace(",", ""),
                "dead features have their own labelled bar", str(dead_bar))
        if summary.get("neuron_sparsity"):
            c.check(b.eval("!document.getElementById('sparsity').hidden"), "neuron sparsity shown")

        # Sorting: the first click on Density sorts descending, the second ascending.
        sort = b.eval("(() => { const th = document.querySelector('#features th[data-key=density]'); "
                      "const t0 = performance.now(); th.click(); const ms = performance.now() - t0; "
                      "return [ms, [...document.querySelectorAll('#features tbody tr[data-feature]')].slice(0, 5).map(r => +r.dataset.feature)] })()")
        want = [f["i"] for f in sorted(live, key=lambda f: (-f["density"], f["i"]))[:5]]
        c.check(sort[1] == want, "sort by density, descending", "%s != %s" % (sort[1], want))
        c.check(sort[0] < args.max_sort_ms, "sorting %d rows is instant" % d_sae, "%.1f ms" % sort[0])
        sort_ms = sort[0]
        asc = b.eval("document.querySelector('#features th[data-key=density]').click(), "
                     "[...document.querySelectorAll('#features tbody tr[data-feature]')].slice(0, 5).map(r => +r.dataset.feature)")
        want = [f["i"] for f in sorted(live, key=lambda f: (f["density"], f["i"]))[:5]]
        c.check(asc == want, "sort by density, ascending", "%s != %s" % (asc, want))
        order = b.eval("[1, 2, 3].map(() => { document.querySelector('#features th[data-key=i]').click(); "
                       "return document.querySelector('#features th[data-key=i]').getAttribute('aria-sort') })")
        c.check(order == ["ascending", "descending", "ascending"], "clicking a header again reverses the order", str(order))

        # Filters: hide dead off shows every feature; a token and a density range give the rows the data say.
        all_rows = b.eval("(() => { const d = document.getElementById('filter-dead'); d.checked = false; "
                          "d.dispatchEvent(new Event('change')); const n = +document.getElementById('features').dataset.rows; "
                          "d.checked = true; d.dispatchEvent(new Event('change')); return n })()")
        c.check(all_rows == d_sae, "hide dead off: every feature", "%s != %d" % (all_rows, d_sae))
        needle = None
        for f in live:
            for t in f["top_logits"]:
                v = visible(t)
                if re.fullmatch(r"[A-Za-z]+", v) and not ids_only:
                    needle = v.lower()
                    break
            if needle:
                break
        if ids_only:
            needle = str(live[0]["top_logits"][0]) if live and live[0]["top_logits"] else None
        if needle:
            def matches(f):
                return any(needle in str(t).lower() or needle in visible(t).lower() for t in f["top_logits"]) \
                    or (needle.isdigit() and f["i"] == int(needle))
            want = sum(1 for f in live if matches(f))
            got = b.eval("(() => { const e = document.getElementById('filter-text'); e.value = %s; "
                         "e.dispatchEvent(new Event('input')); return +document.getElementById('features').dataset.rows })()"
                         % json.dumps(needle))
            c.check(got == want, "text filter %r" % needle, "%s != %d" % (got, want))
        lo = 10 ** -3
        got = b.eval("(() => { document.getElementById('filter-reset').click(); const e = document.getElementById('filter-min'); "
                     "e.value = '1e-3'; e.dispatchEvent(new Event('input')); return +document.getElementById('features').dataset.rows })()")
        want = sum(1 for f in live if f["density"] >= lo)
        c.check(got == want, "density >= 1e-3 filter", "%s != %d" % (got, want))
        b.eval("document.getElementById('filter-reset').click(), window.scrollTo(0, 0)")
        b.screenshot(os.path.join(args.shots, args.label + "-index.png"))
        c.errors(b)

        # ---- a feature page, opened by clicking its row ----
        if target is None:
            c.check(False, "a live feature with contexts to open")
        else:
            fi = target["i"]
            t0 = time.monotonic()
            b.eval("(() => { const e = document.getElementById('filter-text'); e.value = '#%d'; e.dispatchEvent(new Event('input')); "
                   "document.querySelector('#features tbody tr[data-feature=\"%d\"] td.num').click() })()" % (fi, fi))
            st = b.wait("location.hash === '#f=%d' && document.getElementById('feature-view').dataset.state !== 'loading' "
                        "&& document.getElementById('feature-view').dataset.state" % fi)
            open_ms = 1000 * (time.monotonic() - t0)
            c.check(st == "ready", "clicking row #%d opens its page" % fi, "state %s: %s" % (st, b.eval("document.getElementById('feature-view').innerText")[:300]))
            check_top_context(b, c, target, "")
            n_ex = b.eval("document.querySelectorAll('#feature-view .examples.top .ex').length")
            c.check(n_ex == len(target["examples"]), "all top contexts shown", "%s != %d" % (n_ex, len(target["examples"])))
            n_q = b.eval("document.querySelectorAll('#feature-view .examples.quantile').length")
            c.check(n_q == sum(1 for q in target.get("quantiles", []) if q.get("examples")), "quantile samples shown", str(n_q))
            n_up = b.eval("document.querySelectorAll('#feature-view .logits.up tr').length")
            n_down = b.eval("document.querySelectorAll('#feature-view .logits.down tr').length")
            c.check((n_up, n_down) == (len(target["top_logits"]), len(target["bottom_logits"])), "logit tables", str((n_up, n_down)))
            hist = b.eval("document.querySelectorAll('#feature-view svg rect.bar').length")
            c.check(hist == len(target["act_hist"]["counts"]), "activation histogram bars", str(hist))
            html_tok = [t for t in target["examples"][0]["tokens"] if "<" in str(t)]
            xss = b.eval("[window.saefwXss === undefined, document.querySelectorAll('#feature-view script, #feature-view img, #feature-view iframe').length, "
                         "[...document.querySelectorAll('#feature-view .tok')].map(t => t.textContent).filter(t => t.includes('<')).length]")
            c.check(xss[0] and xss[1] == 0, "HTML in tokens is not run", str(xss))
            if html_tok:
                c.check(xss[2] > 0, "HTML in tokens shows as text", str(xss))
            if ids_only:
                c.check(b.eval("document.querySelectorAll('#feature-view .tok.id').length") > 0, "tokens shown as ids")
                c.check("no tokenizer" in b.eval("document.getElementById('message').innerText"), "a note says tokens are ids")
            height = b.eval("document.documentElement.scrollHeight")
            b.screenshot(os.path.join(args.shots, args.label + "-feature.png"), full_height=min(max(height, 600), 2400))
            c.errors(b)

            # Another feature of the same shard, then back: the shard's script is added once.
            other = fi + 1 if fi + 1 < d_sae and (fi + 1) // shard_size == target_shard else fi - 1
            for f in (other, fi):
                b.eval("location.hash = 'f=%d'" % f)
                b.wait("document.getElementById('feature-view').dataset.feature === '%d' && "
                       "document.getElementById('feature-view').dataset.state !== 'loading'" % f)
            tags = b.eval("document.querySelectorAll('script[src$=\"shard_%04d.js\"]').length" % target_shard)
            c.check(tags == 1, "a shard is loaded once", "%s script tags" % tags)
            # The back button: #f=fi <- #f=other <- #f=fi <- the index.
            for want_hash in ("#f=%d" % other, "#f=%d" % fi, ""):
                b.eval("history.back()")
                b.wait("location.hash === %s" % json.dumps(want_hash), timeout=5)
            c.check(b.wait("document.body.dataset.view === 'index' && !document.getElementById('index-view').hidden "
                           "&& document.getElementById('feature-view').hidden", timeout=5), "back button returns to the index")
            b.eval("location.hash = 'f=%d'" % d_sae)
            st = b.wait("document.getElementById('feature-view').dataset.state !== 'loading' && document.getElementById('feature-view').dataset.state")
            c.check(st == "error" and "no feature" in b.eval("document.getElementById('feature-view').innerText"),
                    "#f=d_sae says there is no such feature")
            if dead:
                b.eval("location.hash = 'f=%d'" % dead[0]["i"])
                st = b.wait("document.getElementById('feature-view').dataset.feature === '%d' && "
                            "document.getElementById('feature-view').dataset.state !== 'loading' && "
                            "document.getElementById('feature-view').dataset.state" % dead[0]["i"])
                c.check(st == "ready" and "never fired" in b.eval("document.getElementById('feature-view').innerText"),
                        "a dead feature's page says it never fired")
            # The link itself: index.html#f=N opened in a fresh page.
            b.navigate("about:blank")
            b.navigate(url_of(rep, "#f=%d" % fi))
            st = b.wait("document.readyState === 'complete' && document.getElementById('feature-view').dataset.state !== 'loading' "
                        "&& document.getElementById('feature-view').dataset.state")
            c.check(st == "ready", "index.html#f=%d opens the feature page" % fi, str(st))
            check_top_context(b, c, target, "opened by its link: ")
            c.errors(b)

        # ---- broken folders: a message, never a blank page ----
        partial = os.path.join(tmp, "partial")
        os.makedirs(os.path.join(partial, "data"))
        for name in ("index.html", "report.js", "report.css"):
            shutil.copy(os.path.join(rep, name), partial)
        shutil.copy(os.path.join(rep, "data", "summary.js"), os.path.join(partial, "data"))
        b.navigate("about:blank")
        b.navigate(url_of(partial, "#f=%d" % (target["i"] if target else 0)))
        st = b.wait("document.readyState === 'complete' && document.getElementById('feature-view').dataset.state !== 'loading' "
                    "&& document.getElementById('feature-view').dataset.state")
        text = b.eval("document.getElementById('feature-view').innerText")
        c.check(st == "error" and re.search(r"shard_\d{4}\.js is missing", text), "a missing shard is named", text[:300])
        c.errors(b, allowed=r"ERR_FILE_NOT_FOUND")
        os.remove(os.path.join(partial, "data", "summary.js"))
        b.navigate("about:blank")
        b.navigate(url_of(partial))
        st = b.wait("document.readyState === 'complete' && document.body.dataset.state !== 'loading' && document.body.dataset.state")
        text = b.eval("document.body.innerText")
        c.check(st == "error" and "data/summary.js" in text and "saefw features" in text,
                "a folder without data says so", text[:300])
        c.errors(b, allowed=r"ERR_FILE_NOT_FOUND")
    except BrowserError as e:
        c.check(False, "browser session", str(e))
        c.errors(b)
    finally:
        b.close()
        shutil.rmtree(tmp, ignore_errors=True)

    got = locals()
    print("%s: index ready in %.0f ms (summary drawn in %.0f ms), sort by density %.1f ms, feature page in %.0f ms" %
          ((args.label,) + tuple(got.get(k, -1) for k in ("load_ms", "summary_ms", "sort_ms", "open_ms"))))
    print("%s: %d passed, %d failed; screenshots in %s" % (args.label, c.passed, len(c.failures), args.shots))
    return 1 if c.failures else 0


if __name__ == "__main__":
    sys.exit(main())
