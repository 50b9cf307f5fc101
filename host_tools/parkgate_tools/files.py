"""Files the host tools write whole: write to a part file beside the target,
flush it to disk, then rename it over the target, so a reader (or a crash)
sees the old file or the new one, never half of one. And the lock file
that lets one writer at a time, across processes, read-modify-write them."""
import contextlib
import fcntl
import os


@contextlib.contextmanager
def replacing(path):
    """Yields the path of a part file to write; on success it replaces `path`.

    On an exception the part file is removed and `path` is left as it was."""
    part = "%s.%d.part" % (path, os.getpid())
    try:
        yield part
        os.replace(part, path)
    finally:
        if os.path.exists(part):
            os.remove(part)


@contextlib.contextmanager
def write_atomic(path, mode="w", private=False, **open_args):
    """open(path, mode, **open_args) through a part file that replaces `path`
    once written and synced; private=True makes it readable by the owner only
    (0600) from its creation."""
    with replacing(path) as part:
        fd = os.open(part, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600 if private else 0o666)
        with os.fdopen(fd, mode, **open_args) as f:
            if private:
                os.fchmod(f.fileno(), 0o600)
            yield f
            f.flush()
            os.fsync(f.fileno())


@contextlib.contextmanager
def locked(folder, name):
    """Hold an exclusive lock on the file folder/name (made, as folder,
    if missing; folder 0700) for the block: one holder at a time across
    processes and across threads that each enter it."""
    os.makedirs(folder, mode=0o700, exist_ok=True)
    with open(os.path.join(folder, name), "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)
