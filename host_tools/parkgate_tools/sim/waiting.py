"""The one polling loop of the simulator, its demo and the tests: wait
until a condition holds, or fail naming what was waited for."""
import time


def wait_until(predicate, timeout, what="condition", every=0.05, error=TimeoutError):
    """Call predicate() every `every` seconds until it returns something
    true, and return that; after `timeout` seconds raise error("timed out
    after <timeout>s waiting for <what>")."""
    deadline = time.monotonic() + timeout
    while True:
        found = predicate()
        if found:
            return found
        if time.monotonic() > deadline:
            raise error("timed out after %ss waiting for %s" % (timeout, what))
        time.sleep(every)
