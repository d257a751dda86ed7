# Not an official program: what rabbitkit's interop test (tests/stream_tutorials.rs)
# changes in RabbitMQ's official Python stream tutorials, in one place.
# Every tutorial program here imports it; each use is marked "interop".
import os
import sys
from urllib.parse import unquote, urlsplit


def broker():
    """Host, port, user and password of the first URL of
    RABBITKIT_STREAM_ADDR (rabbitmq-stream://user:password@host:port), as
    rabbitkit's examples read it; else the tutorials' localhost:5552 as
    guest. Returned as keyword arguments of rstream's Producer and Consumer."""
    urls = (os.environ.get("RABBITKIT_STREAM_ADDR") or "").split(",")
    url = urlsplit(urls[0].strip() or "rabbitmq-stream://guest:guest@localhost:5552")
    return {
        "host": url.hostname or "localhost",
        "port": url.port or 5552,
        "username": unquote(url.username or "guest"),
        "password": unquote(url.password or "guest"),
    }


def name(variable, official):
    """The official stream or consumer name, unless the test names another
    (rabbitkit's programs use the names of the tutorials' other languages)."""
    return os.environ.get(variable) or official


def exit_after():
    """Stop after this many messages (0: never, as the official programs)."""
    return int(os.environ.get("EXIT_AFTER") or "0")


def details():
    """Print what the test checks besides the official lines."""
    return bool(os.environ.get("INTEROP_DETAILS"))


def interactive():
    """Whether a person can press Enter (the test gives no standard input)."""
    return sys.stdin is not None and sys.stdin.isatty()
