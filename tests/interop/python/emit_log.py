#!/usr/bin/env python
# RabbitMQ's official tutorial 3 ("Publish/Subscribe"), emit_log.py, as
# published in rabbitmq-tutorials/python (`logs` is a non-durable fanout
# exchange). Changed for rabbitkit's interop test (tests/interop.rs) only
# where marked "interop": the broker URL comes from AMQP_ADDR.
import os
import sys

import pika

# interop: the first URL of AMQP_ADDR, as rabbitkit's examples read it.
AMQP_URL = (os.environ.get("AMQP_ADDR") or "amqp://guest:guest@127.0.0.1:5672/%2f").split(",")[0].strip()

connection = pika.BlockingConnection(pika.URLParameters(AMQP_URL))
channel = connection.channel()

channel.exchange_declare(exchange="logs", exchange_type="fanout")

message = " ".join(sys.argv[1:]) or "info: Hello World!"
channel.basic_publish(exchange="logs", routing_key="", body=message)
print(f" [x] Sent {message}")
connection.close()
