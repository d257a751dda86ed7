# RabbitMQ's official stream tutorial 1 ("Hello World!"), receive.py, as in
# rabbitmq-tutorials/python-stream (rstream), written again for rabbitkit's
# interop test (tests/stream_tutorials.rs). It behaves as the official one
# except where marked "interop" (see _interop.py): the broker comes from
# RABBITKIT_STREAM_ADDR, STREAM names another stream, EXIT_AFTER=N stops
# it after N messages, and INTEROP_DETAILS=1 also prints each message's
# body as an AMQP 1.0 message and its offset.
import asyncio

from rstream import (
    AMQPMessage,
    Consumer,
    ConsumerOffsetSpecification,
    MessageContext,
    OffsetType,
    amqp_decoder,
)

import _interop

STREAM_NAME = _interop.name("STREAM", "hello-python-stream")  # interop: STREAM
STREAM_RETENTION = 5_000_000_000  # 5 GB


async def receive():
    received = 0  # interop
    done = asyncio.Event()  # interop

    async with Consumer(**_interop.broker()) as consumer:  # interop: broker()
        await consumer.create_stream(
            STREAM_NAME, exists_ok=True, arguments={"max-length-bytes": STREAM_RETENTION}
        )

        async def on_message(msg: AMQPMessage, message_context: MessageContext):
            nonlocal received
            # No decoder: msg is the entry's raw bytes.
            print("Got message: {} from stream {}".format(msg, message_context.stream))
            if _interop.details():  # interop
                try:
                    body = amqp_decoder(msg).body
                except Exception as e:  # not an AMQP 1.0 message
                    body = f"not AMQP 1.0 ({type(e).__name__})"
                print(f" [interop] body {body!r} offset {message_context.offset}")
            received += 1  # interop
            if received == _interop.exit_after():
                done.set()

        print("Press control + C to close")
        await consumer.start()
        await consumer.subscribe(
            stream=STREAM_NAME,
            callback=on_message,
            offset_specification=ConsumerOffsetSpecification(OffsetType.FIRST, None),
        )
        try:
            if _interop.exit_after():  # interop
                await done.wait()
            else:
                await consumer.run()
        except (KeyboardInterrupt, asyncio.CancelledError):
            print("Closing Consumer...")
            return


with asyncio.Runner() as runner:
    runner.run(receive())
