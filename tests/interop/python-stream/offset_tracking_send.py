# RabbitMQ's official stream tutorial 2 ("Offset tracking"),
# offset_tracking_send.py, as in rabbitmq-tutorials/python-stream (rstream),
# written again for rabbitkit's interop test (tests/stream_tutorials.rs). It
# behaves as the official one except where marked "interop" (see
# _interop.py): the broker comes from RABBITKIT_STREAM_ADDR and STREAM names
# another stream.
import asyncio

from rstream import AMQPMessage, ConfirmationStatus, Producer

import _interop

STREAM = _interop.name("STREAM", "stream-offset-tracking-python")  # interop: STREAM
MESSAGES = 100
STREAM_RETENTION = 2_000_000_000  # 2 GB

confirmed = 0
all_confirmed = asyncio.Event()


async def on_confirm(confirmation: ConfirmationStatus) -> None:
    global confirmed
    if confirmation.is_confirmed:
        confirmed += 1
        if confirmed == MESSAGES:
            all_confirmed.set()


async def publish():
    async with Producer(**_interop.broker()) as producer:  # interop: broker()
        await producer.create_stream(
            STREAM, exists_ok=True, arguments={"max-length-bytes": STREAM_RETENTION}
        )
        print("Publishing {} messages".format(MESSAGES))
        # 99 "hello: i", then "marker: 99": AMQP 1.0 messages.
        for i in range(MESSAGES):
            text = "hello: {}" if i < MESSAGES - 1 else "marker: {}"
            await producer.send(
                stream=STREAM,
                message=AMQPMessage(body=bytes(text.format(i), "utf-8")),
                on_publish_confirm=on_confirm,
            )
        await all_confirmed.wait()
        print("Messages confirmed: true")


asyncio.run(publish())
