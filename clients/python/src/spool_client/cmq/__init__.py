"""The CMQ Python SDK's names on a Spool server, so code written for CMQ runs with a changed import.

    from spool_client.cmq import Account, QueueMeta, Message, CMQExceptionBase

    account = Account("http://127.0.0.1:50051", secretId, secretKey)
    queue = account.get_queue("QueueForTest")
    queue_meta = QueueMeta()
    queue_meta.visibilityTimeout = 10
    queue.create(queue_meta)
    queue.send_message(Message("I am test message."))
    message = queue.receive_message(3)
    queue.delete_message(message.receiptHandle)

The SDK's modules are here too: `from spool_client.cmq.account import Account`,
`from spool_client.cmq.queue import QueueMeta, Message`,
`from spool_client.cmq.cmq_exception import CMQExceptionBase`. Queues only: CMQ's Topic and
Subscription objects are not here yet (use spool_client.Client's create_topic, subscribe and
publish_message). queue.py and cmq_exception.py say where Spool differs from CMQ.
"""

from .account import Account
from .cmq_exception import (
    CMQClientException,
    CMQClientNetworkException,
    CMQClientParameterException,
    CMQExceptionBase,
    CMQServerException,
    CMQServerNetworkException,
)
from .queue import Message, Queue, QueueMeta

__all__ = [
    "Account",
    "CMQClientException",
    "CMQClientNetworkException",
    "CMQClientParameterException",
    "CMQExceptionBase",
    "CMQServerException",
    "CMQServerNetworkException",
    "Message",
    "Queue",
    "QueueMeta",
]
