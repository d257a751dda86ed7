#!/usr/bin/env python
# RabbitMQ's official tutorial 6 ("RPC"), rpc_client.py, as published in
# rabbitmq-tutorials/python: an exclusive, server-named callback queue,
# reply_to and correlation_id. Changed for rabbitkit's interop test
# (tests/interop.rs) only where marked "interop": the broker URL comes from
# AMQP_ADDR, the number to ask for is the first argument (default 30), and
# INTEROP_DETAILS=1 prints the reply's raw body.
import os
import sys
import uuid

import pika

# interop: the first URL of AMQP_ADDR, as rabbitkit's examples read it.
AMQP_URL = (os.environ.get("AMQP_ADDR") or "amqp://guest:guest@127.0.0.1:5672/%2f").split(",")[0].strip()
# interop: INTEROP_DETAILS=1 prints what came over the wire, for the test.
DETAILS = os.environ.get("INTEROP_DETAILS") == "1"


class FibonacciRpcClient(object):

    def __init__(self):
        self.connection = pika.BlockingConnection(
            pika.URLParameters(AMQP_URL),
        )

        self.channel = self.connection.channel()

        result = self.channel.queue_declare(queue="", exclusive=True)
        self.callback_queue = result.method.queue

        self.channel.basic_consume(
            queue=self.callback_queue,
            on_message_callback=self.on_response,
            auto_ack=True,
        )

        self.response = None
        self.corr_id = None

    def on_response(self, ch, method, props, body):
        if self.corr_id == props.correlation_id:
            self.response = body

    def call(self, n):
        self.response = None
        self.corr_id = str(uuid.uuid4())
        self.channel.basic_publish(
            exchange="",
            routing_key="rpc_queue",
            properties=pika.BasicProperties(
                reply_to=self.callback_queue,
                correlation_id=self.corr_id,
            ),
            body=str(n),
        )
        while self.response is None:
            self.connection.process_data_events(time_limit=None)
        if DETAILS:  # interop
            print(f" [interop] reply body {self.response!r}")
        return int(self.response)


fibonacci_rpc = FibonacciRpcClient()

n = int(sys.argv[1]) if len(sys.argv) > 1 else 30  # interop
print(f" [x] Requesting fib({n})")
response = fibonacci_rpc.call(n)
print(f" [.] Got {response}")
