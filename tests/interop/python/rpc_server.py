#!/usr/bin/env python
# RabbitMQ's official tutorial 6 ("RPC"), rpc_server.py, as published in
# rabbitmq-tutorials/python since 2026-03 (`rpc_queue` is a durable quorum
# queue). Changed for rabbitkit's interop test (tests/interop.rs) only where
# marked "interop": the broker URL comes from AMQP_ADDR, EXIT_AFTER=N makes it
# stop by itself after N requests (default: run until Ctrl-C), and Ctrl-C ends
# it quietly; INTEROP_DETAILS=1 prints each request's raw body.
import os
import sys

import pika

# interop: the first URL of AMQP_ADDR, as rabbitkit's examples read it.
AMQP_URL = (os.environ.get("AMQP_ADDR") or "amqp://guest:guest@127.0.0.1:5672/%2f").split(",")[0].strip()
# interop: stop after this many requests (0: never).
EXIT_AFTER = int(os.environ.get("EXIT_AFTER") or "0")
# interop: INTEROP_DETAILS=1 prints what came over the wire, for the test.
DETAILS = os.environ.get("INTEROP_DETAILS") == "1"

connection = pika.BlockingConnection(
    pika.URLParameters(AMQP_URL),
)
channel = connection.channel()

channel.queue_declare(queue="rpc_queue", durable=True, arguments={"x-queue-type": "quorum"})


def fib(n):
    if n == 0:
        return 0
    elif n == 1:
        return 1
    else:
        return fib(n - 1) + fib(n - 2)


answered = 0  # interop


def on_request(ch, method, props, body):
    global answered
    if DETAILS:  # interop
        print(f" [interop] request body {body!r}")
    n = int(body)

    print(f" [.] fib({n})")
    response = fib(n)

    ch.basic_publish(
        exchange="",
        routing_key=props.reply_to,
        properties=pika.BasicProperties(correlation_id=props.correlation_id),
        body=str(response),
    )
    ch.basic_ack(delivery_tag=method.delivery_tag)
    answered += 1  # interop
    if answered == EXIT_AFTER:
        ch.stop_consuming()


channel.basic_qos(prefetch_count=1)
channel.basic_consume(queue="rpc_queue", on_message_callback=on_request)

print(" [x] Awaiting RPC requests")
try:  # interop
    channel.start_consuming()
    connection.close()
except KeyboardInterrupt:
    sys.exit(0)
