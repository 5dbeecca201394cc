"""The CMQ SDK's Topic, TopicMeta and Message (cmq/topic.py), on a Spool client.

Differences from CMQ, all from Spool's model:
- A topic holds no messages: a publish is in every subscribed queue whose filter it passes once
  it returns, so msgCount and msgRetentionSeconds are 0.
- Creating a topic that exists with the same attributes succeeds; with others it fails with 4460.
- A topic's filterType (1 tags, 2 routing keys) is fixed at creation; set_attributes changes
  maxMsgSize only, as CMQ's.
- Bodies: as Queue's (a str is sent as UTF-8; set_encoding(True) base64-encodes them).
"""

from __future__ import annotations

import base64
import time
from typing import Dict, List, Sequence, Tuple, Union

from .._client import Client
from ..pb import queue_pb2 as pb
from ._calls import BAD_PARAMETER, cmq_errors
from .cmq_exception import CMQClientParameterException
from .queue import Message

# CMQ's filterType values; Spool's FilterType enum has the same numbers.
FILTER_TAGS = 1
FILTER_ROUTING_KEYS = 2
# CMQ's listings return 20 items when no limit is given.
DEFAULT_LIST_LIMIT = 20
# Most items Spool's list RPCs return in one page.
_MAX_PAGE_SIZE = 1000

__all__ = ["Message", "Topic", "TopicMeta"]


def _format_time(seconds: int) -> str:
    return time.strftime("%Y/%m/%d %H:%M:%S", time.localtime(seconds))


def check_listing(limit, offset) -> Tuple[int, int]:
    """CMQ's listing arguments as (start, count): limit -1 means 20, offset "" means 0."""
    start = 0 if offset in ("", None) else offset
    count = DEFAULT_LIST_LIMIT if limit == -1 else limit
    for name, value in (("limit", count), ("offset", start)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise CMQClientParameterException("Invalid %s:%r" % (name, value), BAD_PARAMETER)
    if count == 0:
        raise CMQClientParameterException("Invalid limit:0", BAD_PARAMETER)
    return start, count


def listing(total: int, items: list, start: int) -> Tuple[int, list, Union[int, str]]:
    """CMQ's (totalCount, list, next_offset); next_offset is "" on the last page."""
    next_offset = start + len(items)
    return total, items, next_offset if next_offset < total else ""


def list_names(page_of, start: int, count: int) -> Tuple[int, List[str]]:
    """Names `start` to `start + count` of a listing paged by token: `page_of(page_size,
    page_token)` returns (names, next_page_token, total_count)."""
    names: List[str] = []
    to_skip, token, total = start, "", 0
    with cmq_errors():
        while len(names) < count:
            page_names, token, total = page_of(
                min(_MAX_PAGE_SIZE, to_skip + count - len(names)), token
            )
            kept = page_names[to_skip:]
            to_skip = max(0, to_skip - len(page_names))
            names.extend(kept[: count - len(names)])
            if not token:
                break
    return total, names


class TopicMeta:
    """A topic's attributes: maxMsgSize and filterType settable; the rest filled by
    get_attributes (times in Unix seconds)."""

    def __init__(self) -> None:
        self.topicName = ""
        self.msgCount = 0
        self.maxMsgSize = 65536
        self.msgRetentionSeconds = 0
        self.createTime = 0
        self.lastModifyTime = 0
        self.filterType = FILTER_TAGS

    @classmethod
    def _from_topic(cls, topic: pb.Topic) -> TopicMeta:
        meta = cls()
        meta.topicName = topic.name
        meta.maxMsgSize = topic.attributes.max_message_size
        meta.filterType = int(topic.attributes.filter_type)
        meta.createTime = topic.create_time.seconds
        meta.lastModifyTime = topic.update_time.seconds
        return meta

    def __str__(self) -> str:
        info = {
            "topicName": self.topicName,
            "msgCount": self.msgCount,
            "createTime": _format_time(self.createTime),
            "lastModifyTime": _format_time(self.lastModifyTime),
            "maxMsgSize": self.maxMsgSize,
            "msgRetentionSeconds": self.msgRetentionSeconds,
            "filterType": self.filterType,
        }
        return "\n".join("%s: %s" % (key.ljust(30), value) for key, value in info.items())


class Topic:
    """One topic of an Account (Account.get_topic); the topic need not exist yet."""

    def __init__(self, topicName: str, cmq_client: Client, debug: bool = False) -> None:
        self.topicName = topicName
        self.cmq_client = cmq_client
        self.debug = debug
        self.encoding = False

    def set_debug(self, debug: bool) -> None:
        self.debug = debug

    def set_encoding(self, encoding: bool) -> None:
        """Whether bodies are base64-encoded on the server, as CMQ's SDK offers."""
        self.encoding = encoding

    def create(self, topic_meta: TopicMeta) -> None:
        """Creates the topic with topic_meta's filterType and maxMsgSize (<= 0: the default)."""
        size = topic_meta.maxMsgSize if topic_meta.maxMsgSize > 0 else None
        with cmq_errors():
            self.cmq_client.create_topic(
                self.topicName, max_message_size=size, filter_type=topic_meta.filterType
            )

    def delete(self) -> None:
        """Deletes the topic and its subscriptions; their queues and messages stay."""
        with cmq_errors():
            self.cmq_client.delete_topic(self.topicName)

    def get_attributes(self) -> TopicMeta:
        with cmq_errors():
            return TopicMeta._from_topic(self.cmq_client.get_topic(self.topicName))

    def set_attributes(self, topic_meta: TopicMeta) -> None:
        """Changes maxMsgSize when it is > 0 (CMQ's only settable topic attribute)."""
        size = topic_meta.maxMsgSize if topic_meta.maxMsgSize > 0 else None
        with cmq_errors():
            self.cmq_client.update_topic(self.topicName, max_message_size=size)

    def publish_message(self, message: Message, routingKey: str = "") -> Message:
        """Publishes message.msgBody with its msgTag (a tag topic) or routingKey (a routing-key
        topic): a copy in every subscribed queue whose filter it passes, all or none. Returns
        a Message with the publish's msgId."""
        body = self._encode(message)
        with cmq_errors():
            published = self.cmq_client.publish_message(
                self.topicName, body, tags=list(message.msgTag), routing_key=routingKey
            )
        return self._published(message, published.message_id)

    def batch_publish_message(
        self, messages: Sequence[Message], msgtag: Sequence[str] = (), routingKey: str = ""
    ) -> List[Message]:
        """Publishes 1 to 16 messages, each with the tags `msgtag` and the routing key (as
        CMQ's batch: one set for all), every copy of every message in one transaction."""
        messages = list(messages)
        entries = [
            pb.BatchPublishEntry(
                body=self._encode(message), tags=list(msgtag), routing_key=routingKey
            )
            for message in messages
        ]
        with cmq_errors():
            results = self.cmq_client.batch_publish_messages(self.topicName, entries)
        return [self._published(m, r.message_id) for m, r in zip(messages, results)]

    def list_subscription(
        self, searchWord: str = "", limit: int = -1, offset: Union[int, str] = ""
    ) -> Tuple[int, List[Dict[str, str]], Union[int, str]]:
        """The topic's subscriptions whose name contains searchWord, in name order, as CMQ's
        SDK returns them: (totalCount, subscriptionList, next_offset), each item a dict
        {"subscriptionId", "subscriptionName", "protocol", "endpoint"} (the id is the name,
        the protocol "queue", the endpoint the queue's name)."""
        start, count = check_listing(limit, offset)
        # At most 100 per topic: read them whole and filter here, as the HTTP edge does.
        matching = [s for s in self._subscriptions() if searchWord in s.name]
        items = [
            {
                "subscriptionId": s.name,
                "subscriptionName": s.name,
                "protocol": "queue",
                "endpoint": s.queue_name,
            }
            for s in matching[start : start + count]
        ]
        return listing(len(matching), items, start)

    def _subscriptions(self) -> List[pb.Subscription]:
        found: List[pb.Subscription] = []
        token = ""
        with cmq_errors():
            while True:
                page = self.cmq_client.list_subscriptions(
                    self.topicName, page_size=_MAX_PAGE_SIZE, page_token=token
                )
                found.extend(page.subscriptions)
                token = page.next_page_token
                if not token:
                    return found

    def _encode(self, message: Message) -> bytes:
        body = message.msgBody
        if isinstance(body, str):
            body = body.encode("utf-8")
        elif not isinstance(body, (bytes, bytearray)):
            raise CMQClientParameterException(
                "msgBody is a str or bytes, not %s" % type(body).__name__, BAD_PARAMETER
            )
        return base64.b64encode(body) if self.encoding else bytes(body)

    @staticmethod
    def _published(message: Message, message_id: str) -> Message:
        sent = Message(message.msgBody, message.msgTag)
        sent.msgId = message_id
        return sent


def topic_names(client: Client, searchWord: str, start: int, count: int) -> Tuple[int, List[str]]:
    """Names of the topics starting with searchWord, `start` to `start + count`."""

    def page_of(size: int, token: str):
        page = client.list_topics(searchWord, page_size=size, page_token=token)
        return [t.name for t in page.topics], page.next_page_token, page.total_count

    return list_names(page_of, start, count)
