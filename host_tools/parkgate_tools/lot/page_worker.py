"""The operator page's own process: works out the page's snapshots on a
database connection of its own, so that their Python work (a day of events,
a fee checked for every exit) never holds the lot server's interpreter lock
while its bridge stores events and answers fees (OperatorPage, aside=True),
and runs at the lowest CPU priority, so that it gets the CPU only when the
bridge does not want it.

Run by the page as ``python -m parkgate_tools.lot.page_worker``: each
request is a pickle on stdin, (location, lock_wait, lot, tariff, now,
utc_offset_s, day), each answer a pickle on stdout, ("ok", (seconds,
snapshot, the SVG of its chart)) or ("error", exception). It ends when stdin closes."""
import os
import pickle
import subprocess
import sys
import time

from parkgate_tools.lot.store import open_store

# The page's process yields the CPU to the bridge's: the lowest priority.
NICE = 19


class PageWorker:
    """The page's side of the process: ask() sends a request and waits for
    its answer; the process is started at construction, again after it died."""

    def __init__(self):
        self.proc = None
        self._start()

    def _start(self):
        self.proc = subprocess.Popen([sys.executable, "-m", __name__], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE)

    def ask(self, *request):
        """(seconds the snapshot took there, the snapshot, its chart's SVG);
        raises what it raised."""
        if self.proc.poll() is not None:
            self._start()
        try:
            pickle.dump(request, self.proc.stdin)
            self.proc.stdin.flush()
            status, value = pickle.load(self.proc.stdout)
        except (OSError, EOFError, pickle.UnpicklingError) as exc:
            self.close()
            raise RuntimeError("the operator page's worker process died: %s" % exc) from exc
        if status == "error":
            raise value
        return value

    def close(self):
        """End the process."""
        try:
            self.proc.stdin.close()
            self.proc.wait(5)
        except (OSError, subprocess.TimeoutExpired):
            self.proc.kill()
            self.proc.wait()


def serve(stdin, stdout):
    """Answer requests until stdin closes, at the NICE priority; 0."""
    from parkgate_tools.lot.operator_page import OperatorPage
    os.nice(NICE)
    pages = {}
    while True:
        try:
            location, lock_wait, lot, table, now, utc_offset_s, day = pickle.load(stdin)
        except EOFError:
            return 0
        started = time.monotonic()
        try:
            page = pages.get((location, lot))
            if page is None:
                store = open_store(location, lot, lock_wait, create_schema=False)
                page = pages[(location, lot)] = OperatorPage(store, lot, None, aside=False)
            page.tariff_source, page.utc_offset_s = (lambda: table), utc_offset_s
            page.clock = lambda: now
            snapshot = page.work_out(day, now)
            chart = page.chart(snapshot)     # drawn here too, not in the bridge's process
            answer = ("ok", (time.monotonic() - started, snapshot, chart))
        except Exception as exc:  # sent back to the page, raised there
            answer = ("error", exc)
        pickle.dump(answer, stdout)
        stdout.flush()


if __name__ == "__main__":
    sys.exit(serve(sys.stdin.buffer, sys.stdout.buffer))
