#!/usr/bin/env python
# RabbitMQ's official tutorial 2 ("Work Queues"), new_task.py, as published in
# rabbitmq-tutorials/python since 2026-03 (`task_queue` is a durable quorum
# queue, tasks are persistent). Changed for rabbitkit's interop test
# (tests/interop.rs) only where marked "interop": the broker URL comes from
# AMQP_ADDR.
import os
import sys

import pika

# interop: the first URL of AMQP_ADDR, as rabbitkit's examples read it.
AMQP_URL = (os.environ.get("AMQP_ADDR") or "amqp://guest:guest@127.0.0.1:5672/%2f").split(",")[0].strip()

connection = pika.BlockingConnection(
    pika.URLParameters(AMQP_URL),
)
channel = connection.channel()

channel.queue_declare(queue="task_queue", durable=True, arguments={"x-queue-type": "quorum"})

message = " ".join(sys.argv[1:]) or "Hello World!"
channel.basic_publish(
    exchange="",
    routing_key="task_queue",
    body=message,
    properties=pika.BasicProperties(
        delivery_mode=pika.DeliveryMode.Persistent,
    ),
)
print(f" [x] Sent {message}")

connection.close()
