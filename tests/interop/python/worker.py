#!/usr/bin/env python
# RabbitMQ's official tutorial 2 ("Work Queues"), worker.py, as published in
# rabbitmq-tutorials/python since 2026-03 (`task_queue` is a durable quorum
# queue; prefetch 1, manual acks). Changed for rabbitkit's interop test
# (tests/interop.rs) only where marked "interop": the broker URL comes from
# AMQP_ADDR, EXIT_AFTER=N makes it stop by itself after N tasks (default: run
# until Ctrl-C), Ctrl-C ends it quietly as in receive.py, and
# INTEROP_DETAILS=1 prints each task's delivery mode (2: persistent).
import os
import sys
import time

import pika

# interop: the first URL of AMQP_ADDR, as rabbitkit's examples read it.
AMQP_URL = (os.environ.get("AMQP_ADDR") or "amqp://guest:guest@127.0.0.1:5672/%2f").split(",")[0].strip()
# interop: stop after this many tasks (0: never).
EXIT_AFTER = int(os.environ.get("EXIT_AFTER") or "0")
# interop: INTEROP_DETAILS=1 prints what came over the wire, for the test.
DETAILS = os.environ.get("INTEROP_DETAILS") == "1"

connection = pika.BlockingConnection(
    pika.URLParameters(AMQP_URL),
)
channel = connection.channel()

channel.queue_declare(queue="task_queue", durable=True, arguments={"x-queue-type": "quorum"})
print(" [*] Waiting for messages. To exit press CTRL+C")

done = 0  # interop


def callback(ch, method, properties, body):
    global done
    print(f" [x] Received {body.decode()}")
    if DETAILS:  # interop
        print(f" [interop] delivery_mode {properties.delivery_mode}")
    time.sleep(body.count(b"."))
    print(" [x] Done")
    ch.basic_ack(delivery_tag=method.delivery_tag)
    done += 1  # interop
    if done == EXIT_AFTER:
        ch.stop_consuming()


channel.basic_qos(prefetch_count=1)
channel.basic_consume(queue="task_queue", on_message_callback=callback)

try:  # interop
    channel.start_consuming()
    connection.close()
except KeyboardInterrupt:
    sys.exit(0)
