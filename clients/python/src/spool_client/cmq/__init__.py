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
`from spool_client.cmq.topic import Topic, TopicMeta`,
`from spool_client.cmq.subscription import Subscription, SubscriptionMeta`,
`from spool_client.cmq.cmq_exception import CMQExceptionBase`. Topics as in CMQ's SDK:

    topic = account.get_topic("orders")
    topic.create(TopicMeta())                       # filterType 1: tags
    subscription_meta = SubscriptionMeta()
    subscription_meta.Protocal, subscription_meta.Endpoint = "queue", "QueueForTest"
    subscription_meta.FilterTag = ["eu"]
    account.get_subscription("orders", "eu-orders").create(subscription_meta)
    topic.publish_message(Message("new order", ["eu"]))   # a copy in QueueForTest

queue.py, topic.py, subscription.py and cmq_exception.py say where Spool differs from CMQ.
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
from .subscription import Subscription, SubscriptionMeta
from .topic import Topic, TopicMeta

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
    "Subscription",
    "SubscriptionMeta",
    "Topic",
    "TopicMeta",
]
