#!/usr/bin/env python
# Not an official tutorial: a pika consumer that prints the W3C trace
# context headers of the one message it takes from QUEUE (tests/tracing.rs
# checks that a rabbitkit publish carries its span's `traceparent`).
#
#   receive_traced.py QUEUE
import os
import sys

import pika

AMQP_URL = (os.environ.get("AMQP_ADDR") or "amqp://guest:guest@127.0.0.1:5672/%2f").split(",")[0].strip()

queue = sys.argv[1]

connection = pika.BlockingConnection(pika.URLParameters(AMQP_URL))
channel = connection.channel()
for method, properties, body in channel.consume(queue, inactivity_timeout=30):
    if method is None:
        print(" [!] no message within 30 s")
        sys.exit(1)
    headers = properties.headers or {}
    traceparent = headers.get("traceparent")
    if isinstance(traceparent, bytes):
        traceparent = traceparent.decode()
    print(f" [x] Received {body.decode()} with traceparent {traceparent}")
    channel.basic_ack(method.delivery_tag)
    break
channel.cancel()
connection.close()
