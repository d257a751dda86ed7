#!/usr/bin/env python
# RabbitMQ's official tutorial 3 ("Publish/Subscribe"), receive_logs.py, as
# published in rabbitmq-tutorials/python (`logs` is a non-durable fanout
# exchange; each subscriber binds an exclusive server-named queue). Changed
# for rabbitkit's interop test (tests/interop.rs) only where marked "interop":
# the broker URL comes from AMQP_ADDR, EXIT_AFTER=N makes it stop by itself
# after N messages (default: run until Ctrl-C), and Ctrl-C ends it quietly.
import os
import sys

import pika

# interop: the first URL of AMQP_ADDR, as rabbitkit's examples read it.
AMQP_URL = (os.environ.get("AMQP_ADDR") or "amqp://guest:guest@127.0.0.1:5672/%2f").split(",")[0].strip()
# interop: stop after this many messages (0: never).
EXIT_AFTER = int(os.environ.get("EXIT_AFTER") or "0")

connection = pika.BlockingConnection(pika.URLParameters(AMQP_URL))
channel = connection.channel()

channel.exchange_declare(exchange="logs", exchange_type="fanout")

result = channel.queue_declare(queue="", exclusive=True)
queue_name = result.method.queue

channel.queue_bind(exchange="logs", queue=queue_name)

print(" [*] Waiting for logs. To exit press CTRL+C")

received = 0  # interop


def callback(ch, method, properties, body):
    global received
    print(f" [x] {body}")
    received += 1  # interop
    if received == EXIT_AFTER:
        ch.stop_consuming()


channel.basic_consume(queue=queue_name, on_message_callback=callback, auto_ack=True)

try:  # interop
    channel.start_consuming()
    connection.close()
except KeyboardInterrupt:
    sys.exit(0)
