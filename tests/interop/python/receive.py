#!/usr/bin/env python
# RabbitMQ's official tutorial 1 ("Hello World!"), receive.py, as published in
# rabbitmq-tutorials/python since 2026-03 (`hello` is a durable quorum queue).
# Changed for rabbitkit's interop test (tests/interop.rs) only where marked
# "interop": the broker URL comes from AMQP_ADDR, and EXIT_AFTER=N makes it
# stop by itself after N messages (default: run until Ctrl-C).
import os
import sys

import pika

# interop: the first URL of AMQP_ADDR, as rabbitkit's examples read it.
AMQP_URL = (os.environ.get("AMQP_ADDR") or "amqp://guest:guest@127.0.0.1:5672/%2f").split(",")[0].strip()
# interop: stop after this many messages (0: never).
EXIT_AFTER = int(os.environ.get("EXIT_AFTER") or "0")


def main():
    connection = pika.BlockingConnection(
        pika.URLParameters(AMQP_URL),
    )
    channel = connection.channel()

    channel.queue_declare(queue="hello", durable=True, arguments={"x-queue-type": "quorum"})

    received = 0  # interop

    def callback(ch, method, properties, body):
        nonlocal received
        print(f" [x] Received {body.decode()}")
        received += 1  # interop
        if received == EXIT_AFTER:
            ch.stop_consuming()

    channel.basic_consume(
        queue="hello",
        on_message_callback=callback,
        auto_ack=True,
    )

    print(" [*] Waiting for messages. To exit press CTRL+C")
    channel.start_consuming()
    connection.close()  # interop: reached after EXIT_AFTER messages


if __name__ == "__main__":
    try:
        main()
    except KeyboardInterrupt:
        print("Interrupted")
        try:
            sys.exit(0)
        except SystemExit:
            os._exit(0)
