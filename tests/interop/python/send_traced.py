#!/usr/bin/env python
# Not an official tutorial: a pika producer that continues a trace the way
# OpenTelemetry's instrumentations do, by setting the W3C `traceparent`
# header by hand (tests/tracing.rs checks that a rabbitkit consumer's
# handler span continues it).
#
#   send_traced.py QUEUE TRACEPARENT BODY
import os
import sys

import pika

AMQP_URL = (os.environ.get("AMQP_ADDR") or "amqp://guest:guest@127.0.0.1:5672/%2f").split(",")[0].strip()

queue, traceparent, body = sys.argv[1], sys.argv[2], sys.argv[3]

connection = pika.BlockingConnection(pika.URLParameters(AMQP_URL))
channel = connection.channel()
channel.confirm_delivery()
channel.basic_publish(
    exchange="",
    routing_key=queue,
    body=body,
    properties=pika.BasicProperties(
        content_type="text/plain",
        delivery_mode=2,
        headers={"traceparent": traceparent, "tracestate": "vendor=rabbitkit-test"},
    ),
)
print(f" [x] Sent {body} with traceparent {traceparent}")
connection.close()
