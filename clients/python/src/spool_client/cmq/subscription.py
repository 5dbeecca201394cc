"""The CMQ SDK's Subscription and SubscriptionMeta (cmq/subscription.py), on a Spool client.

Differences from CMQ, all from Spool's model:
- Subscriptions deliver into Spool queues: Protocal must be "queue" and Endpoint the queue's
  name (the queue must exist). CMQ's HTTP push is not served: any other protocol raises
  CMQClientParameterException (4000).
- NotifyStrategy and NotifyContentFormat (push settings) are checked against CMQ's values and
  not stored; get_attributes shows EXPONENTIAL_DECAY_RETRY and SIMPLIFIED.
- A subscription's filter (FilterTag or bindingKey) is fixed at create: set_attributes and
  clearFilterTags succeed when they set the filter it has, and raise 4000 otherwise
  (delete and create the subscription again).
- msgCount is 0: copies are in the queue once a publish returns.
"""

from __future__ import annotations

import time
from typing import List, Optional

from .._client import Client
from ..pb import queue_pb2 as pb
from ._calls import BAD_PARAMETER, cmq_errors
from .cmq_exception import CMQClientParameterException, CMQServerException

PROTOCOL_QUEUE = "queue"
NOTIFY_STRATEGIES = ("BACKOFF_RETRY", "EXPONENTIAL_DECAY_RETRY")
NOTIFY_CONTENT_FORMATS = ("JSON", "SIMPLIFIED")
# CMQ's number for "no such topic or subscription" (Spool's TOPIC_NOT_FOUND).
NOT_FOUND = 4440
_MAX_PAGE_SIZE = 1000


def _format_time(seconds: int) -> str:
    return time.strftime("%Y/%m/%d %H:%M:%S", time.localtime(seconds))


class SubscriptionMeta:
    """A subscription's attributes, with the SDK's names (Protocal is its spelling)."""

    def __init__(self) -> None:
        self.TopicOwner = ""
        self.Endpoint = ""
        self.Protocal = ""
        self.NotifyStrategy = "EXPONENTIAL_DECAY_RETRY"
        self.NotifyContentFormat = "JSON"
        self.FilterTag: List[str] = []
        self.CreateTime = 0
        self.LastModifyTime = 0
        self.msgCount = 0
        self.bindingKey: List[str] = []

    # CMQ's SDK fills createTime and lastModifyTime (lower case) from get_attributes.
    @property
    def createTime(self) -> int:
        return self.CreateTime

    @property
    def lastModifyTime(self) -> int:
        return self.LastModifyTime

    @classmethod
    def _from_subscription(cls, subscription: pb.Subscription) -> SubscriptionMeta:
        meta = cls()
        meta.Endpoint = subscription.queue_name
        meta.Protocal = PROTOCOL_QUEUE
        meta.NotifyStrategy = "EXPONENTIAL_DECAY_RETRY"
        meta.NotifyContentFormat = "SIMPLIFIED"
        meta.FilterTag = list(subscription.filter_tags)
        meta.bindingKey = list(subscription.binding_keys)
        meta.CreateTime = subscription.create_time.seconds
        # Spool's subscriptions never change after Subscribe.
        meta.LastModifyTime = subscription.create_time.seconds
        return meta

    def __str__(self) -> str:
        info = {
            "topicOwner": self.TopicOwner,
            "endpoint": self.Endpoint,
            "protocal": self.Protocal,
            "notifyStrategy": self.NotifyStrategy,
            "notifyContentFormat": self.NotifyContentFormat,
            "filterTag": self.FilterTag,
            "createTime": _format_time(self.CreateTime),
            "lastModifyTime": _format_time(self.LastModifyTime),
            "msgCount": self.msgCount,
            "bindingKey": self.bindingKey,
        }
        return "\n".join("%s: %s" % (key.ljust(30), value) for key, value in info.items())


def _check_push_settings(meta: SubscriptionMeta) -> None:
    for name, value, allowed in (
        ("NotifyStrategy", meta.NotifyStrategy, NOTIFY_STRATEGIES),
        ("NotifyContentFormat", meta.NotifyContentFormat, NOTIFY_CONTENT_FORMATS),
    ):
        if value and value not in allowed:
            raise CMQClientParameterException(
                "%s is %r; it must be one of %s" % (name, value, ", ".join(allowed)),
                BAD_PARAMETER,
            )


def _unchangeable() -> CMQClientParameterException:
    return CMQClientParameterException(
        "a subscription's FilterTag and bindingKey cannot change in Spool: delete the "
        "subscription and create it again",
        BAD_PARAMETER,
    )


class Subscription:
    """One subscription of a topic (Account.get_subscription); it need not exist yet."""

    def __init__(
        self, topicName: str, subscriptionName: str, cmq_client: Client, debug: bool = False
    ) -> None:
        self.topicName = topicName
        self.subscriptionName = subscriptionName
        self.cmq_client = cmq_client
        self.debug = debug
        self.encoding = False

    def set_debug(self, debug: bool) -> None:
        self.debug = debug

    def set_encoding(self, encoding: bool) -> None:
        """Kept for CMQ's SDK; a queue subscription's bodies are the published ones."""
        self.encoding = encoding

    def create(self, subscription_meta: SubscriptionMeta) -> None:
        """Subscribes the queue named by Endpoint (Protocal "queue") with FilterTag (a tag topic)
        or bindingKey (a routing-key topic); none: every message."""
        if subscription_meta.Protocal != PROTOCOL_QUEUE:
            raise CMQClientParameterException(
                "Protocal is %r: Spool's subscriptions deliver into its queues, so it is %r and "
                "Endpoint is a queue's name (HTTP push is not served)"
                % (subscription_meta.Protocal, PROTOCOL_QUEUE),
                BAD_PARAMETER,
            )
        _check_push_settings(subscription_meta)
        with cmq_errors():
            self.cmq_client.subscribe(
                self.topicName,
                self.subscriptionName,
                subscription_meta.Endpoint,
                filter_tags=list(subscription_meta.FilterTag),
                binding_keys=list(subscription_meta.bindingKey),
            )

    def get_attributes(self) -> SubscriptionMeta:
        return SubscriptionMeta._from_subscription(self._find())

    def set_attributes(self, subscription_meta: SubscriptionMeta) -> None:
        """Succeeds when it sets only the push settings or the filter the subscription has;
        another filter raises CMQClientParameterException (4000)."""
        _check_push_settings(subscription_meta)
        current = self._find()
        tags, keys = list(subscription_meta.FilterTag), list(subscription_meta.bindingKey)
        if (tags and tags != list(current.filter_tags)) or (
            keys and keys != list(current.binding_keys)
        ):
            raise _unchangeable()

    def delete(self) -> None:
        """Unsubscribes; the copies already in the queue stay."""
        with cmq_errors():
            self.cmq_client.unsubscribe(self.topicName, self.subscriptionName)

    def clearFilterTags(self) -> None:
        """Succeeds when the subscription has no filter tags; else raises 4000."""
        if self._find().filter_tags:
            raise _unchangeable()

    def _find(self) -> pb.Subscription:
        token: Optional[str] = ""
        with cmq_errors():
            while True:
                page = self.cmq_client.list_subscriptions(
                    self.topicName, page_size=_MAX_PAGE_SIZE, page_token=token or ""
                )
                for subscription in page.subscriptions:
                    if subscription.name == self.subscriptionName:
                        return subscription
                token = page.next_page_token
                if not token:
                    break
        raise CMQServerException(
            "topic %r has no subscription %r" % (self.topicName, self.subscriptionName),
            "",
            NOT_FOUND,
            {},
        )
