#!/usr/bin/env python
# Not an official tutorial program: receive.py of tutorial 1 reading the queue
# `delayed_hello` instead of `hello`, for rabbitkit's interop test
# (tests/interop.rs): a message delayed by rabbitkit's `delayed` example
# reaches a consumer written with another client as an ordinary message.
# AMQP_ADDR and EXIT_AFTER as in receive.py.
import os
import sys

import pika

AMQP_URL = (os.environ.get("AMQP_ADDR") or "amqp://guest:guest@127.0.0.1:5672/%2f").split(",")[0].strip()
EXIT_AFTER = int(os.environ.get("EXIT_AFTER") or "0")


def main():
    connection = pika.BlockingConnection(pika.URLParameters(AMQP_URL))
    channel = connection.channel()

    channel.queue_declare(queue="delayed_hello", durable=True, arguments={"x-queue-type": "quorum"})

    received = 0

    def callback(ch, method, properties, body):
        nonlocal received
        print(f" [x] Received {body.decode()}")
        received += 1
        if received == EXIT_AFTER:
            ch.stop_consuming()

    channel.basic_consume(queue="delayed_hello", on_message_callback=callback, auto_ack=True)

    print(" [*] Waiting for messages. To exit press CTRL+C")
    channel.start_consuming()
    connection.close()


if __name__ == "__main__":
    try:
        main()
    except KeyboardInterrupt:
        print("Interrupted")
        try:
            sys.exit(0)
        except SystemExit:
            os._exit(0)
