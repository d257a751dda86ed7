#!/usr/bin/env python
# Not an official tutorial program: a delayed message published with pika
# through rabbitkit's plugin-free delay queues (rabbitkit_core::delay), for
# rabbitkit's interop test (tests/interop.rs) and the book's chapter "Delays,
# retries and dead letters". It declares what it uses exactly as rabbitkit
# does (so the two can share the queues), then puts MESSAGE on the queue
# `delayed_hello` SECONDS from now.
#
#   python delayed_send.py SECONDS MESSAGE
#
# AMQP_ADDR: the broker (its first URL), as for the other programs here.
import math
import os
import sys

import pika

AMQP_URL = (os.environ.get("AMQP_ADDR") or "amqp://guest:guest@127.0.0.1:5672/%2f").split(",")[0].strip()

UNIT_MS = 100          # delays are rounded up to 100 ms
LEVELS = 26            # level k holds messages for UNIT_MS * 2**k
PREFIX = "rabbitkit.delay."
DELIVER = PREFIX + "deliver"
SINK = PREFIX + "sink"


def level(k):
    return f"{PREFIX}{k:02}"


def inbox(queue):
    return f"{PREFIX}to.q.{queue}"


def bit_header(k):
    return f"rabbitkit-delay-{k:02}"


def quorum(ttl_ms, dead_letter_exchange=None):
    args = {"x-queue-type": "quorum", "x-message-ttl": ttl_ms}
    if dead_letter_exchange is not None:
        args.update({
            "x-dead-letter-exchange": dead_letter_exchange,
            "x-dead-letter-strategy": "at-least-once",
            "x-overflow": "reject-publish",
        })
    return args


# ANCHOR: declare
def declare(channel, top, queue):
    channel.exchange_declare(DELIVER, "headers", durable=True)
    channel.queue_declare(SINK, durable=True, arguments=quorum(0))
    channel.queue_bind(SINK, DELIVER, arguments={"x-match": "all"})
    for k in range(top + 1):
        below = level(k - 1) if k > 0 else DELIVER
        channel.exchange_declare(level(k), "headers", durable=True)
        channel.queue_declare(level(k), durable=True, arguments=quorum(UNIT_MS * 2**k, below))
        channel.queue_bind(level(k), level(k), arguments={"x-match": "all", bit_header(k): "1"})
        channel.exchange_bind(below, level(k), arguments={"x-match": "all", bit_header(k): "0"})
    # The target's own inbox: a quorum queue with a TTL of 0 that
    # dead-letters, at least once, to the fanout exchange of the same name,
    # bound to the target and the sink. The default exchange's targets are
    # queues, picked by name.
    box = inbox(queue)
    match = {"x-match": "all", "rabbitkit-delay-queue": queue}
    channel.exchange_declare(box, "fanout", durable=True)
    channel.queue_declare(box, durable=True, arguments=quorum(0, box))
    channel.queue_bind(box, DELIVER, routing_key="", arguments=match)
    channel.queue_bind(SINK, box, routing_key="")
    channel.queue_bind(queue, box, routing_key="")
    # Older versions bound the target straight to DELIVER: with both, the
    # target would get each message twice.
    channel.queue_unbind(queue, DELIVER, routing_key="", arguments=match)
# ANCHOR_END: declare


def main():
    seconds = float(sys.argv[1]) if len(sys.argv) > 1 else 5.0
    message = sys.argv[2] if len(sys.argv) > 2 else "Hello later!"
    # ANCHOR: units
    units = max(1, math.ceil(seconds * 1000 / UNIT_MS))
    top = units.bit_length() - 1  # the highest level the delay uses
    # ANCHOR_END: units
    assert top < LEVELS, "longer than the longest delay"

    connection = pika.BlockingConnection(pika.URLParameters(AMQP_URL))
    channel = connection.channel()
    channel.confirm_delivery()
    channel.queue_declare(queue="delayed_hello", durable=True, arguments={"x-queue-type": "quorum"})
    declare(channel, top, "delayed_hello")

    # ANCHOR: publish
    headers = {bit_header(k): str(units >> k & 1) for k in range(top + 1)}
    headers["rabbitkit-delay-queue"] = "delayed_hello"
    channel.basic_publish(
        exchange=level(top),          # enter at the highest level the delay uses
        routing_key="delayed_hello",  # kept all the way: the default exchange routes by it
        body=message,
        properties=pika.BasicProperties(delivery_mode=pika.DeliveryMode.Persistent, headers=headers),
        mandatory=True,
    )
    # ANCHOR_END: publish
    print(f" [x] Sent {message}, due in {seconds} s")
    connection.close()


if __name__ == "__main__":
    main()
