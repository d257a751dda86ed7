# RabbitMQ's official stream tutorial 1 ("Hello World!"), send.py, as in
# rabbitmq-tutorials/python-stream (rstream), written again for rabbitkit's
# interop test (tests/stream_tutorials.rs). It behaves as the official one
# except where marked "interop" (see _interop.py): the broker comes from
# RABBITKIT_STREAM_ADDR, STREAM names another stream, and it waits for
# Enter only when a person can press it.
import asyncio

from rstream import Producer

import _interop

STREAM_NAME = _interop.name("STREAM", "hello-python-stream")  # interop: STREAM
STREAM_RETENTION = 5_000_000_000  # 5 GB


async def send():
    async with Producer(**_interop.broker()) as producer:  # interop: broker()
        await producer.create_stream(
            STREAM_NAME, exists_ok=True, arguments={"max-length-bytes": STREAM_RETENTION}
        )
        # A raw body, as the official program sends it (not an AMQP 1.0 message).
        await producer.send(stream=STREAM_NAME, message=b"Hello, World!")
        print(" [x] Hello, World! message sent")
        if _interop.interactive():  # interop
            input(" [x] Press Enter to close the producer  ...")


with asyncio.Runner() as runner:
    runner.run(send())
