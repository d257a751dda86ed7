#!/usr/bin/env python
# RabbitMQ's official tutorial 1 ("Hello World!"), send.py, as published in
# rabbitmq-tutorials/python since 2026-03 (`hello` is a durable quorum queue).
# Changed for rabbitkit's interop test (tests/interop.rs) only where marked
# "interop": the broker URL comes from AMQP_ADDR.
import os

import pika

# interop: the first URL of AMQP_ADDR, as rabbitkit's examples read it.
AMQP_URL = (os.environ.get("AMQP_ADDR") or "amqp://guest:guest@127.0.0.1:5672/%2f").split(",")[0].strip()

connection = pika.BlockingConnection(
    pika.URLParameters(AMQP_URL),
)
channel = connection.channel()

channel.queue_declare(queue="hello", durable=True, arguments={"x-queue-type": "quorum"})

channel.basic_publish(exchange="", routing_key="hello", body="Hello World!")
print(" [x] Sent 'Hello World!'")

connection.close()
