"""spool_client.cmq's Topic and Subscription (CMQ's SDK names) against a real server: tag and
routing-key topics fanning out into queues, listings, attributes and CMQ's codes."""

from __future__ import annotations

import uuid

import pytest
from spool_client.cmq import (
    CMQClientParameterException,
    CMQExceptionBase,
    CMQServerException,
    Message,
    QueueMeta,
    Subscription,
    SubscriptionMeta,
    Topic,
    TopicMeta,
)
from spool_client.cmq import subscription as subscription_module
from spool_client.cmq import topic as topic_module


def fresh(kind: str) -> str:
    return "%s%s" % (kind, uuid.uuid4().hex[:12])


def expect_code(code: int, call, *args, **kwargs) -> CMQExceptionBase:
    with pytest.raises(CMQExceptionBase) as caught:
        call(*args, **kwargs)
    assert caught.value.code == code, caught.value
    return caught.value


def make_queue(account, name: str):
    queue = account.get_queue(name)
    queue.create(QueueMeta())
    return queue


def make_topic(account, name: str, filter_type: int = 1, max_size: int = 0) -> Topic:
    topic = account.get_topic(name)
    meta = TopicMeta()
    meta.filterType = filter_type
    meta.maxMsgSize = max_size
    topic.create(meta)
    return topic


def subscribe(account, topic: str, name: str, queue: str, tags=(), keys=(), protocol="queue"):
    subscription = account.get_subscription(topic, name)
    meta = SubscriptionMeta()
    meta.Protocal = protocol
    meta.Endpoint = queue
    meta.FilterTag = list(tags)
    meta.bindingKey = list(keys)
    subscription.create(meta)
    return subscription


def drain(queue, count: int) -> list:
    received = queue.batch_receive_message(16, 2)
    queue.batch_delete_message([m.receiptHandle for m in received])
    assert len(received) == count, [m.msgBody for m in received]
    return sorted(m.msgBody for m in received)


def test_the_sdk_modules_are_there():
    assert topic_module.Topic is Topic and topic_module.TopicMeta is TopicMeta
    assert topic_module.Message is Message
    assert subscription_module.Subscription is Subscription
    assert subscription_module.SubscriptionMeta is SubscriptionMeta


def test_tag_topic_fans_out_with_filters(account):
    topic_name = fresh("topic")
    topic = make_topic(account, topic_name, max_size=2048)
    orders_name, audit_name = fresh("orders"), fresh("audit")
    orders, audit = make_queue(account, orders_name), make_queue(account, audit_name)
    subscribe(account, topic_name, "orders", orders_name, tags=["order"])
    audit_sub = subscribe(account, topic_name, "audit", audit_name)

    sent = topic.publish_message(Message("new order", ["order"]))
    assert sent.msgId and sent.msgTag == ["order"] and sent.msgBody == "new order"
    topic.publish_message(Message("new invoice", ["invoice"]))
    batch = topic.batch_publish_message([Message("o1"), Message("o2")], ["order"])
    assert len({m.msgId for m in batch}) == 2
    assert drain(orders, 3) == ["new order", "o1", "o2"]
    assert drain(audit, 4) == ["new invoice", "new order", "o1", "o2"]

    meta = topic.get_attributes()
    assert (meta.topicName, meta.filterType, meta.maxMsgSize, meta.msgCount) == (
        topic_name, 1, 2048, 0)
    assert meta.createTime > 0 and "filterType" in str(meta)
    changed = TopicMeta()
    changed.maxMsgSize = 4096
    topic.set_attributes(changed)
    assert topic.get_attributes().maxMsgSize == 4096
    # Too large for the topic: 4400 (CMQ's "too large"), or 4000.
    expect_code(4400, topic.publish_message, Message("x" * 5000))

    total, listed, next_offset = topic.list_subscription()
    assert (total, next_offset) == (2, "")
    assert listed == [
        {"subscriptionId": "audit", "subscriptionName": "audit", "protocol": "queue",
         "endpoint": audit_name},
        {"subscriptionId": "orders", "subscriptionName": "orders", "protocol": "queue",
         "endpoint": orders_name},
    ]
    total, listed, next_offset = topic.list_subscription(searchWord="ord", limit=1)
    assert (total, [s["subscriptionName"] for s in listed], next_offset) == (1, ["orders"], "")
    total, listed, next_offset = topic.list_subscription(limit=1)
    assert (total, len(listed), next_offset) == (2, 1, 1)

    attributes = account.get_subscription(topic_name, "orders").get_attributes()
    assert (attributes.Endpoint, attributes.Protocal, attributes.FilterTag) == (
        orders_name, "queue", ["order"])
    assert attributes.bindingKey == [] and attributes.createTime > 0 and attributes.msgCount == 0
    same = SubscriptionMeta()
    same.FilterTag = ["order"]
    account.get_subscription(topic_name, "orders").set_attributes(same)
    other = SubscriptionMeta()
    other.FilterTag = ["refund"]
    expect_code(4000, account.get_subscription(topic_name, "orders").set_attributes, other)
    expect_code(4000, account.get_subscription(topic_name, "orders").clearFilterTags)
    account.get_subscription(topic_name, "audit").clearFilterTags()

    audit_sub.delete()
    topic.publish_message(Message("late", ["order"]))
    assert drain(orders, 1) == ["late"]
    expect_code(7000, audit.receive_message, 0)
    expect_code(4440, audit_sub.get_attributes)
    topic.delete()
    expect_code(4440, topic.get_attributes)


def test_routing_key_topic(account):
    topic_name = fresh("routed")
    topic = make_topic(account, topic_name, filter_type=2)
    eu_name, all_name = fresh("eu"), fresh("all")
    eu, everything = make_queue(account, eu_name), make_queue(account, all_name)
    subscribe(account, topic_name, "eu", eu_name, keys=["order.eu.*"])
    subscribe(account, topic_name, "all", all_name, keys=["#"])
    topic.publish_message(Message("paris"), routingKey="order.eu.fr")
    topic.publish_message(Message("ohio"), routingKey="order.us.oh")
    topic.batch_publish_message([Message("r1"), Message(b"r2")], routingKey="refund.eu")
    assert drain(eu, 1) == ["paris"]
    assert drain(everything, 4) == ["ohio", "paris", "r1", "r2"]
    assert account.get_subscription(topic_name, "eu").get_attributes().bindingKey == [
        "order.eu.*"]
    # Tags on a routing-key topic, and a malformed routing key: 4000.
    expect_code(4000, topic.publish_message, Message("x", ["tag"]), "order.eu.fr")
    expect_code(4000, topic.publish_message, Message("x"), "order..eu")
    # No routing key: "#" (zero or more words) takes it; "order.eu.*" does not.
    topic.publish_message(Message("keyless"))
    assert drain(everything, 1) == ["keyless"]
    expect_code(7000, eu.receive_message, 0)
    topic.delete()


def test_encoding_and_listing_topics(account):
    prefix = fresh("listed")
    for i in range(3):
        make_topic(account, "%s-%d" % (prefix, i))
    total, first, next_offset = account.list_topic(searchWord=prefix, limit=2)
    assert (total, next_offset) == (3, 2)
    assert first == [{"topicId": "%s-%d" % (prefix, i), "topicName": "%s-%d" % (prefix, i)}
                     for i in range(2)]
    _, rest, done = account.list_topic(searchWord=prefix, limit=2, offset=next_offset)
    assert [t["topicName"] for t in rest] == ["%s-2" % prefix] and done == ""
    with pytest.raises(CMQClientParameterException):
        account.list_topic(limit=0)

    # set_encoding(True): the copy's body is the base64 of what was published.
    queue_name = fresh("encoded")
    queue = make_queue(account, queue_name)
    subscribe(account, "%s-0" % prefix, "enc", queue_name)
    topic = account.get_topic("%s-0" % prefix)
    topic.set_encoding(True)
    topic.publish_message(Message(b"\x00\x01"))
    queue.set_encoding(True)
    assert queue.receive_message(1).msgBody == "\x00\x01"
    for i in range(3):
        account.get_topic("%s-%d" % (prefix, i)).delete()


def test_cmq_codes(account):
    topic_name = fresh("errors")
    make_topic(account, topic_name)
    expect_code(4460, make_topic, account, topic_name, 2)
    expect_code(4440, account.get_topic(fresh("missing")).publish_message, Message("x"))
    expect_code(4440, subscribe, account, topic_name, "s", fresh("no-queue"))
    queue_name = fresh("target")
    make_queue(account, queue_name)
    # HTTP push is not served: a parameter error (4000), before anything is sent.
    with pytest.raises(CMQClientParameterException) as caught:
        subscribe(account, topic_name, "pushed", "http://example.com/", protocol="http")
    assert caught.value.code == 4000 and "queue" in caught.value.message
    bad = SubscriptionMeta()
    bad.Protocal, bad.Endpoint, bad.NotifyStrategy = "queue", queue_name, "NEVER"
    expect_code(4000, account.get_subscription(topic_name, "s").create, bad)
    subscribe(account, topic_name, "s", queue_name)
    subscribe(account, topic_name, "s", queue_name)  # the same again: fine
    expect_code(4460, subscribe, account, topic_name, "s", queue_name, ["other"])
    assert isinstance(
        expect_code(4440, account.get_subscription(topic_name, "nope").get_attributes),
        CMQServerException)
    account.get_topic(topic_name).delete()
