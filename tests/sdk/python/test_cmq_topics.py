"""Tencent's CMQ SDK for Python 3 (PyPI abmn-qcloud-cmq-sdk-py3, module `cmq`), unchanged, on
CMQ's topic actions at /v2/index.php: topics with tag filters and with routing keys, their
subscriptions delivering into Spool queues (protocol "queue", the queue's name as endpoint),
the copies received through the queue API, and CMQ's errors."""

from __future__ import annotations

import uuid

import pytest
from cmq.account import Account
from cmq.cmq_exception import CMQServerException
from cmq.queue import QueueMeta
from cmq.subscription import SubscriptionMeta
from cmq.topic import Message, TopicMeta


def fresh(kind: str) -> str:
    return f"{kind}-{uuid.uuid4().hex[:12]}"


@pytest.fixture(params=["POST", "GET"])
def account(server, request):
    account = Account(server.endpoint, "AKIDspool", "secret")
    account.cmq_client.set_method(request.param)
    return account


def make_queue(account, name: str):
    queue = account.get_queue(name)
    meta = QueueMeta()
    meta.queueName = name
    queue.create(meta)
    return queue


def make_topic(account, name: str, filter_type: int = 1, max_size: int = 0):
    topic = account.get_topic(name)
    meta = TopicMeta()
    meta.filterType = filter_type
    meta.maxMsgSize = max_size
    topic.create(meta)
    return topic


def subscribe(account, topic: str, name: str, queue: str, tags=(), keys=(), protocol="queue"):
    subscription = account.get_subscription(topic, name)
    meta = SubscriptionMeta()
    meta.Endpoint = queue
    meta.Protocal = protocol
    meta.FilterTag = list(tags)
    meta.bindingKey = list(keys)
    subscription.create(meta)
    return subscription


def bodies(queue, count: int) -> list:
    """The bodies of `count` messages, received and deleted through the queue API."""
    received = queue.batch_receive_message(16, 3)
    queue.batch_delete_message([m.receiptHandle for m in received])
    assert len(received) == count, [m.msgBody for m in received]
    return sorted(m.msgBody for m in received)


def test_tag_filters_fan_out_into_queues(account):
    topic_name = fresh("topic")
    topic = make_topic(account, topic_name, filter_type=1, max_size=4096)
    orders, audit = fresh("orders"), fresh("audit")
    q_orders, q_audit = make_queue(account, orders), make_queue(account, audit)
    subscribe(account, topic_name, "orders-sub", orders, tags=["order"])
    all_sub = subscribe(account, topic_name, "audit-sub", audit)

    # One publish with a matching tag, one without: the filtered queue takes only the first.
    sent = topic.publish_message(Message("new order", ["order", "eu"]))
    assert sent.msgId
    topic.publish_message(Message("new invoice", ["invoice"]))
    # A batch: its tags apply to every message of it.
    batch = topic.batch_publish_message([Message("o1"), Message("o2")], ["order"])
    assert len({m.msgId for m in batch}) == 2

    assert bodies(q_orders, 3) == ["new order", "o1", "o2"]
    assert bodies(q_audit, 4) == ["new invoice", "new order", "o1", "o2"]
    with pytest.raises(CMQServerException) as excinfo:
        q_orders.receive_message(0)
    assert excinfo.value.code == 7000

    meta = topic.get_attributes()
    assert (meta.filterType, meta.maxMsgSize, meta.msgCount) == (1, 4096, 0)
    assert meta.createTime > 0 and meta.lastModifyTime >= meta.createTime
    changed = TopicMeta()
    changed.maxMsgSize = 8192
    topic.set_attributes(changed)
    assert topic.get_attributes().maxMsgSize == 8192

    total, listed, next_offset = topic.list_subscription()
    assert total == 2 and next_offset == ""
    assert [(s["subscriptionName"], s["protocol"], s["endpoint"]) for s in listed] == [
        ("audit-sub", "queue", audit), ("orders-sub", "queue", orders)]
    total, listed, _ = topic.list_subscription(searchWord="orders")
    assert total == 1 and listed[0]["subscriptionName"] == "orders-sub"

    attributes = account.get_subscription(topic_name, "orders-sub").get_attributes()
    assert attributes.FilterTag == ["order"] and attributes.bindingKey == []
    assert attributes.Protocal == "queue" and attributes.createTime > 0
    raw = account.cmq_client.get_subscription_attributes(
        {"topicName": topic_name, "subscriptionName": "orders-sub"})
    assert (raw["protocol"], raw["endpoint"], raw["filterTag"]) == ("queue", orders, ["order"])

    # Setting the filter it has, or only the push settings, is fine; another filter is not.
    same = SubscriptionMeta()
    same.FilterTag = ["order"]
    account.get_subscription(topic_name, "orders-sub").set_attributes(same)
    other = SubscriptionMeta()
    other.FilterTag = ["refund"]
    with pytest.raises(CMQServerException) as excinfo:
        account.get_subscription(topic_name, "orders-sub").set_attributes(other)
    assert excinfo.value.code == 4000 and "Subscribe again" in excinfo.value.message

    # Unsubscribed: no more copies there; the copies already in the queue stay.
    all_sub.delete()
    topic.publish_message(Message("after", ["order"]))
    assert bodies(q_orders, 1) == ["after"]
    with pytest.raises(CMQServerException) as excinfo:
        q_audit.receive_message(0)
    assert excinfo.value.code == 7000
    with pytest.raises(CMQServerException) as excinfo:
        all_sub.get_attributes()
    assert excinfo.value.code == 4440

    topic.delete()
    with pytest.raises(CMQServerException) as excinfo:
        topic.get_attributes()
    assert excinfo.value.code == 4440
    # The queues stay.
    q_orders.get_attributes()


def test_routing_keys(account):
    topic_name = fresh("routed")
    topic = make_topic(account, topic_name, filter_type=2)
    eu, everything = fresh("eu"), fresh("all")
    q_eu, q_all = make_queue(account, eu), make_queue(account, everything)
    subscribe(account, topic_name, "eu", eu, keys=["order.eu.*"])
    subscribe(account, topic_name, "all", everything, keys=["order.#", "refund.#"])
    topic.publish_message(Message("paris"), routingKey="order.eu.fr")
    topic.publish_message(Message("ohio"), routingKey="order.us.oh")
    topic.batch_publish_message([Message("r1"), Message("r2")], routingKey="refund.eu.de")
    assert bodies(q_eu, 1) == ["paris"]
    assert bodies(q_all, 4) == ["ohio", "paris", "r1", "r2"]
    assert topic.get_attributes().filterType == 2
    meta = account.get_subscription(topic_name, "eu").get_attributes()
    assert meta.bindingKey == ["order.eu.*"] and meta.FilterTag == []
    # A tag on a routing-key topic is a bad parameter.
    with pytest.raises(CMQServerException) as excinfo:
        topic.publish_message(Message("tagged", ["x"]), routingKey="order.eu.fr")
    assert excinfo.value.code == 4000
    topic.delete()


def test_list_topics_and_errors(account):
    prefix = fresh("listed")
    for i in range(3):
        make_topic(account, f"{prefix}-{i}")
    total, first, next_offset = account.list_topic(searchWord=prefix, limit=2)
    assert total == 3 and next_offset == 2
    assert [t["topicName"] for t in first] == [f"{prefix}-0", f"{prefix}-1"]
    _, rest, done = account.list_topic(searchWord=prefix, limit=2, offset=next_offset)
    assert [t["topicName"] for t in rest] == [f"{prefix}-2"] and done == ""

    # CMQ's codes: 4460 exists with other attributes, 4440 no such topic or queue.
    with pytest.raises(CMQServerException) as excinfo:
        make_topic(account, f"{prefix}-0", filter_type=2)
    assert excinfo.value.code == 4460
    with pytest.raises(CMQServerException) as excinfo:
        account.get_topic(fresh("missing")).publish_message(Message("x"))
    assert excinfo.value.code == 4440
    with pytest.raises(CMQServerException) as excinfo:
        subscribe(account, f"{prefix}-0", "s", fresh("no-queue"))
    assert excinfo.value.code == 4440
    with pytest.raises(CMQServerException) as excinfo:
        make_topic(account, fresh("bad"), filter_type=3)
    assert excinfo.value.code == 4000 and "filterType" in excinfo.value.message

    # HTTP push is not served: protocol "http" is an invalid parameter (4000).
    queue = fresh("target")
    make_queue(account, queue)
    with pytest.raises(CMQServerException) as excinfo:
        subscribe(account, f"{prefix}-0", "pushed", "http://example.com/hook", protocol="http")
    assert excinfo.value.code == 4000 and "protocol" in excinfo.value.message
    subscribe(account, f"{prefix}-0", "queued", queue)
    # Subscribing again alike is fine; to another queue, 4460.
    subscribe(account, f"{prefix}-0", "queued", queue)
    other = fresh("target")
    make_queue(account, other)
    with pytest.raises(CMQServerException) as excinfo:
        subscribe(account, f"{prefix}-0", "queued", other)
    assert excinfo.value.code == 4460
    for i in range(3):
        account.get_topic(f"{prefix}-{i}").delete()
