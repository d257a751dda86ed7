# RabbitMQ's official stream tutorial 2 ("Offset tracking"),
# offset_tracking_receive.py, as in rabbitmq-tutorials/python-stream
# (rstream), written again for rabbitkit's interop test
# (tests/stream_tutorials.rs). It behaves as the official one except where
# marked "interop" (see _interop.py): the broker comes from
# RABBITKIT_STREAM_ADDR, STREAM names another stream, CONSUMER_NAME
# another consumer name, and INTEROP_DETAILS=1 also prints each message's
# offset and body.
#
# Like the official one, it asks the broker for the offset stored under
# its name, starts after it (or at 0), stores the offset of its first
# message and of every 10th after it, and of the marker, where it stops.
import asyncio

from rstream import (
    AMQPMessage,
    Consumer,
    ConsumerOffsetSpecification,
    MessageContext,
    OffsetNotFound,
    OffsetType,
    ServerError,
    amqp_decoder,
)

import _interop

STREAM_NAME = _interop.name("STREAM", "stream-offset-tracking-python")  # interop: STREAM
CONSUMER_NAME = _interop.name("CONSUMER_NAME", "subscriber_1")  # interop: CONSUMER_NAME
STREAM_RETENTION = 2_000_000_000  # 2 GB

message_count = -1
first_offset = -1
last_offset = -1


async def on_message(msg: AMQPMessage, message_context: MessageContext):
    global message_count, first_offset, last_offset
    offset = message_context.offset
    if first_offset == -1:
        print("First message received")
        first_offset = offset
    consumer = message_context.consumer
    stream = message_context.stream
    if _interop.details():  # interop
        print(f" [interop] {offset} {msg.body.decode()}")

    message_count += 1
    if message_count % 10 == 0:
        await consumer.store_offset(
            stream=stream, offset=offset, subscriber_name=message_context.subscriber_name
        )
    if "marker" in str(msg):
        await consumer.store_offset(
            stream=stream, offset=offset, subscriber_name=message_context.subscriber_name
        )
        last_offset = offset
        await consumer.close()


async def consume():
    stored_offset = -1
    consumer = Consumer(**_interop.broker())  # interop: broker()
    await consumer.create_stream(
        STREAM_NAME, exists_ok=True, arguments={"max-length-bytes": STREAM_RETENTION}
    )
    try:
        await consumer.start()
        print("Started consuming: Press control +C to close")
        try:
            stored_offset = await consumer.query_offset(
                stream=STREAM_NAME, subscriber_name=CONSUMER_NAME
            )
        except OffsetNotFound as offset_exception:
            print(f"Offset not previously stored. {offset_exception}")
        except ServerError as server_error:
            print(f"Server error: {server_error}")
            exit(1)

        # After the stored offset, or from 0 when none is stored.
        stored_offset = stored_offset + 1
        await consumer.subscribe(
            stream=STREAM_NAME,
            subscriber_name=CONSUMER_NAME,
            callback=on_message,
            decoder=amqp_decoder,
            offset_specification=ConsumerOffsetSpecification(OffsetType.OFFSET, stored_offset),
        )
        await consumer.run()
    except (KeyboardInterrupt, asyncio.exceptions.CancelledError):
        await consumer.close()

    # Time for the consumer task to close the consumer.
    await asyncio.sleep(1)
    if first_offset != -1:
        print("Done consuming first_offset: {} last_offset {} ".format(first_offset, last_offset))


with asyncio.Runner() as runner:
    runner.run(consume())
