"""The CMQ SDK's Account (cmq/account.py), on a Spool client."""

from __future__ import annotations

import logging
from typing import Dict, List, Optional, Tuple, Union

from .._client import Client
from ._calls import BAD_PARAMETER, cmq_errors
from .cmq_exception import CMQClientParameterException
from .queue import Queue
from .subscription import Subscription
from .topic import Topic, check_listing, listing, topic_names

# CMQ's ListQueue returns 20 queues when no limit is given.
DEFAULT_LIST_LIMIT = 20
# Most queues Spool's ListQueues returns in one page.
_MAX_PAGE_SIZE = 1000

_logger = logging.getLogger("spool_client.cmq")


def bearer_token(secretId: str, secretKey: str) -> Optional[str]:
    """The bearer token an Account sends: "<secretId>:<secretKey>", or none without a secretKey.

    A principal of the server's auth file accepts it when its token_sha256 is the SHA-256 of that
    text, e.g. `printf %s 'AKIDexample:secret' | sha256sum`. Both halves must match, as in CMQ,
    where the SecretId names the key and the request's signature proves the SecretKey.
    """
    if not secretKey:
        return None
    return "%s:%s" % (secretId, secretKey)


def _connect(host: str, secretId: str, secretKey: str) -> Client:
    if not isinstance(host, str) or not host.strip():
        raise CMQClientParameterException("Invalid host:%r" % (host,), BAD_PARAMETER)
    try:
        return Client(host, token=bearer_token(secretId, secretKey))
    except ValueError as error:
        raise CMQClientParameterException(str(error), BAD_PARAMETER) from error


class Account:
    """Entry point of the CMQ SDK: a connection to a Spool server.

    `host` is the server's endpoint: "http://127.0.0.1:50051" (as CMQ's endpoints are written),
    "https://..." for TLS (trusting the system's roots; for a private CA, build a
    spool_client.Client with ca_cert= instead), or plain "host:port". With a `secretKey`, every
    call carries the bearer token "<secretId>:<secretKey>" (see `bearer_token`), so a principal
    of the server's auth file whose token_sha256 is its hash is who calls. CMQ's session
    `token` is accepted and unused. Unlike CMQ's Account, this one is safe to share between
    threads.
    """

    def __init__(
        self,
        host: str,
        secretId: str = "",
        secretKey: str = "",
        token: str = "",
        debug: bool = False,
    ) -> None:
        self.secretId = secretId
        self.secretKey = secretKey
        self.token = token
        self.debug = debug
        self.logger = _logger
        self.cmq_client = _connect(host, secretId, secretKey)

    # -- settings kept for compatibility: Spool signs nothing; the keys are a bearer token ----

    def set_token(self, token: str = "") -> None:
        self.token = token

    def set_sign(self, sign: str = "sha256") -> None:
        if sign not in ("sha1", "sha256"):
            raise CMQClientParameterException(
                "Only support sha1 or sha256. invalid method:%s" % sign, BAD_PARAMETER
            )

    def set_debug(self, debug: bool) -> None:
        self.debug = debug

    def set_log_level(self, log_level: int) -> None:
        """Sets the level of the "spool_client.cmq" logger."""
        self.logger.setLevel(log_level)

    def close_log(self) -> None:
        self.logger.disabled = True

    def set_client(
        self, host: str, secretId: Optional[str] = None, secretKey: Optional[str] = None
    ) -> None:
        """Points the account at another server; queues already obtained keep the old one."""
        if secretId is not None:
            self.secretId = secretId
        if secretKey is not None:
            self.secretKey = secretKey
        self.cmq_client = _connect(host, self.secretId, self.secretKey)

    def get_client(self) -> Client:
        """The spool_client.Client the account uses (CMQ: its CMQClient)."""
        return self.cmq_client

    def close(self) -> None:
        """Closes the connection (not in CMQ's SDK, where connections close with the process)."""
        self.cmq_client.close()

    def __enter__(self) -> Account:
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()

    # -- queues -------------------------------------------------------------------------------

    def get_queue(self, queue_name: str) -> Queue:
        """A Queue object for queue_name; nothing is sent (the queue need not exist)."""
        return Queue(queue_name, self.cmq_client, self.debug)

    def list_queue(
        self, searchWord: str = "", limit: int = -1, offset: Union[int, str] = ""
    ) -> Tuple[int, List[Dict[str, str]], Union[int, str]]:
        """Lists the queues whose name starts with searchWord, in name order, as CMQ's SDK does:
        returns (totalCount, queueList, next_offset).

        queueList holds up to `limit` (default 20) dicts {"queueId", "queueName"}, from the
        `offset`-th queue on (default 0); Spool has no queue ids, so queueId is the name.
        next_offset is the offset of the next page, or "" when this page is the last.
        """
        start = 0 if offset in ("", None) else offset
        count = DEFAULT_LIST_LIMIT if limit == -1 else limit
        for name, value in (("limit", count), ("offset", start)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise CMQClientParameterException("Invalid %s:%r" % (name, value), BAD_PARAMETER)
        if count == 0:
            raise CMQClientParameterException("Invalid limit:0", BAD_PARAMETER)

        # Spool pages by token, not by offset: read the pages before `start` and drop them.
        names: List[str] = []
        to_skip, page_token, total = start, "", 0
        with cmq_errors():
            while len(names) < count:
                page = self.cmq_client.list_queues(
                    searchWord,
                    page_size=min(_MAX_PAGE_SIZE, to_skip + count - len(names)),
                    page_token=page_token,
                )
                total = page.total_count
                page_names = [queue.name for queue in page.queues][to_skip:]
                to_skip = max(0, to_skip - len(page.queues))
                names.extend(page_names[: count - len(names)])
                page_token = page.next_page_token
                if not page_token:
                    break
        queue_list = [{"queueId": name, "queueName": name} for name in names]
        next_offset = start + len(names)
        return total, queue_list, next_offset if next_offset < total else ""

    # -- topics and subscriptions -------------------------------------------------------------

    def get_topic(self, topicName: str) -> Topic:
        """A Topic object for topicName; nothing is sent (the topic need not exist)."""
        return Topic(topicName, self.cmq_client, self.debug)

    def list_topic(
        self, searchWord: str = "", limit: int = -1, offset: Union[int, str] = ""
    ) -> Tuple[int, List[Dict[str, str]], Union[int, str]]:
        """Lists the topics whose name starts with searchWord, in name order, as CMQ's SDK does:
        (totalCount, topicList, next_offset), each item {"topicId", "topicName"} (the id is the
        name); next_offset is "" on the last page."""
        start, count = check_listing(limit, offset)
        total, names = topic_names(self.cmq_client, searchWord, start, count)
        return listing(total, [{"topicId": n, "topicName": n} for n in names], start)

    def get_subscription(self, topicName: str, subscriptionName: str) -> Subscription:
        """A Subscription object; nothing is sent (it need not exist)."""
        return Subscription(topicName, subscriptionName, self.cmq_client, self.debug)
