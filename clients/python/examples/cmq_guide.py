#!/usr/bin/env python3
"""The code of Tencent Cloud CMQ's queue guide, in Python 3, against Spool.

The guide is Tencent Cloud's documentation of CMQ's queue model and its Python SDK (in Chinese;
not part of this repository): it creates a queue, sends one message and a batch, receives and
deletes them, rewinds a queue, and sends a delayed message. This script follows its steps.

    python examples/cmq_guide.py [ENDPOINT]

ENDPOINT defaults to $SPOOL_ENDPOINT, else http://127.0.0.1:50051 (`spool serve`'s address).
The only change from code written for CMQ is the import; the checks marked "check:" are not in
the guide: they make the script exit non-zero if the server does not behave as the guide says.
It creates the queues QueueForTest and QueueTest, and deletes them at the end.
"""

import os
import sys
import time

from spool_client.cmq import Account, CMQExceptionBase, Message, QueueMeta


def check(condition, what):
    if not condition:
        sys.exit("cmq_guide.py: failed: " + what)


endpoint = (
    sys.argv[1] if len(sys.argv) > 1 else os.environ.get("SPOOL_ENDPOINT", "http://127.0.0.1:50051")
)
secretId = ""  # the user's id and key: accepted, unused until Spool has authentication
secretKey = ""
account = Account(endpoint, secretId, secretKey)

# 1. Create a queue.
queueName = "QueueForTest"
queue = account.get_queue(queueName)
queue_meta = QueueMeta()
queue_meta.queueName = queueName
queue_meta.visibilityTimeout = 10
queue_meta.maxMsgSize = 65536
queue_meta.pollingWaitSeconds = 10
try:
    queue.create(queue_meta)
except CMQExceptionBase as e:
    print(e)
    raise
my_queue = queue

try:
    # 2. Send a message, then a batch.
    msg_body = "I am test message."
    msg = Message(msg_body)
    re_msg = my_queue.send_message(msg)
    print("sent", re_msg.msgId)

    msg_count = 3
    messages = []
    for i in range(msg_count):
        msg_body = "I am test message %s." % i
        msg = Message(msg_body)
        messages.append(msg)
    re_msg_list = my_queue.batch_send_message(messages)
    print("sent", [m.msgId for m in re_msg_list])

    # 3. Receive a message, waiting up to 3 s; then up to 3 messages. A message stays invisible
    #    for the visibility timeout; delete it by its receipt handle before then.
    wait_seconds = 3
    recv_msg = my_queue.receive_message(wait_seconds)
    print("received", recv_msg.msgId, recv_msg.msgBody)
    check(recv_msg.msgBody == "I am test message.", "the first message comes first")
    my_queue.delete_message(recv_msg.receiptHandle)

    wait_seconds = 3
    num_of_msg = 3
    recv_msg_list = my_queue.batch_receive_message(num_of_msg, wait_seconds)
    print("received", [m.msgBody for m in recv_msg_list])
    check(len(recv_msg_list) == 3, "the batch of 3 is received")
    my_queue.batch_delete_message([m.receiptHandle for m in recv_msg_list])

    # Nothing left: CMQ's "no message" (7000) once the wait is over.
    try:
        my_queue.receive_message(0)
        check(False, "an empty queue has no message")
    except CMQExceptionBase as e:
        print("empty:", e.code, e.message)
        check(e.code == 7000, "no message is code 7000")

    # 4. Rewind: a queue with a rewind window keeps its deleted messages, and rewinding to a time
    #    makes those enqueued since then receivable again.
    queueName = "QueueTest"
    my_rewind_queue = account.get_queue(queueName)
    queue_meta = QueueMeta()
    queue_meta.rewindSeconds = 43200  # how far back a rewind may go, in seconds
    my_rewind_queue.create(queue_meta)

    start = int(time.time())  # the last good moment (the guide: rewindQueue(1488718862))
    my_rewind_queue.send_message(Message("i am test"))
    recv_msg = my_rewind_queue.receive_message(3)
    my_rewind_queue.delete_message(recv_msg.receiptHandle)  # ...and the consumer had a bug
    my_rewind_queue.rewindQueue(start)  # the time to rewind to, a Unix timestamp
    recv_msg = my_rewind_queue.receive_message(3)
    print("received again", recv_msg.msgBody, "dequeueCount", recv_msg.dequeueCount)
    check(recv_msg.dequeueCount == 2, "the rewound message is delivered again")
    my_rewind_queue.delete_message(recv_msg.receiptHandle)

    # 5. A delayed message: sent again with a flight time of 10 minutes, to retry later.
    message_body = "i am test"
    msg = Message(message_body)
    my_queue.send_message(msg)
    # The message failed: send it again, to be received in 600 s (10 minutes).
    my_queue.send_message(msg, 600)
    # The queue's attributes tell how many delayed messages it holds.
    queue_meta = my_queue.get_attributes()
    print(queue_meta.delayMsgNum)
    check(queue_meta.delayMsgNum == 1, "one delayed message")
    check(queue_meta.activeMsgNum == 1, "one visible message")
finally:
    # Clean up, so the script can run again.
    for name in ("QueueForTest", "QueueTest"):
        try:
            account.get_queue(name).delete()
        except CMQExceptionBase as e:
            print("cannot delete %s: %s" % (name, e))
    account.close()

print("cmq_guide.py: ok")
