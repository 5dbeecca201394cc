//! RabbitMQ: a durable quorum queue per queue, publisher confirms, manual acks with a prefetch.

use std::time::Duration;

use crate::load::{BenchError, BenchResult, Consumer, Producer, Target};
use bytes::Bytes;
use futures_util::{FutureExt as _, StreamExt as _};
use lapin::options::{
    BasicAckOptions, BasicConsumeOptions, BasicPublishOptions, BasicQosOptions,
    ConfirmSelectOptions, QueueDeclareOptions, QueueDeleteOptions,
};
use lapin::types::{AMQPValue, FieldTable};
use lapin::{BasicProperties, Channel, Connection, ConnectionProperties};

pub struct RabbitTarget {
    url: String,
}

impl RabbitTarget {
    pub fn new(url: &str) -> Self {
        Self { url: url.into() }
    }

    async fn channel(&self) -> BenchResult<(Connection, Channel)> {
        let connection = Connection::connect(&self.url, ConnectionProperties::default())
            .await
            .map_err(|e| BenchError::new("connect to RabbitMQ", e))?;
        let channel = connection
            .create_channel()
            .await
            .map_err(|e| BenchError::new("channel", e))?;
        Ok((connection, channel))
    }
}

impl Target for RabbitTarget {
    type Producer = RabbitProducer;
    type Consumer = RabbitConsumer;

    fn name(&self) -> &str {
        "rabbitmq"
    }

    fn durability(&self) -> String {
        "durable quorum queue (1 node), persistent messages, publisher confirms: a publish is \
         confirmed after the Raft log write is fsynced"
            .into()
    }

    fn server_port(&self) -> Option<u16> {
        let authority = self.url.split("://").last()?.split('/').next()?;
        authority.rsplit(':').next()?.parse().ok()
    }

    async fn setup(&self, queues: &[String], _body_bytes: usize) -> BenchResult<()> {
        let (_connection, channel) = self.channel().await?;
        for queue in queues {
            channel
                .queue_delete(queue.as_str().into(), QueueDeleteOptions::default())
                .await
                .map_err(|e| BenchError::new("delete queue", e))?;
            let mut arguments = FieldTable::default();
            arguments.insert(
                "x-queue-type".into(),
                AMQPValue::LongString("quorum".into()),
            );
            channel
                .queue_declare(
                    queue.as_str().into(),
                    QueueDeclareOptions::durable(),
                    arguments,
                )
                .await
                .map_err(|e| BenchError::new("declare queue", e))?;
        }
        Ok(())
    }

    async fn teardown(&self, queues: &[String]) -> BenchResult<()> {
        let (_connection, channel) = self.channel().await?;
        for queue in queues {
            channel
                .queue_delete(queue.as_str().into(), QueueDeleteOptions::default())
                .await
                .map_err(|e| BenchError::new("delete queue", e))?;
        }
        Ok(())
    }

    async fn producer(&self, queue: &str, _connection: usize) -> BenchResult<RabbitProducer> {
        let (connection, channel) = self.channel().await?;
        channel
            .confirm_select(ConfirmSelectOptions::default())
            .await
            .map_err(|e| BenchError::new("confirm_select", e))?;
        Ok(RabbitProducer {
            _connection: connection,
            channel,
            queue: queue.into(),
        })
    }

    async fn consumer(&self, queue: &str, connection: usize) -> BenchResult<RabbitConsumer> {
        let (amqp, channel) = self.channel().await?;
        channel
            .basic_qos(PREFETCH, BasicQosOptions::default())
            .await
            .map_err(|e| BenchError::new("basic_qos", e))?;
        let consumer = channel
            .basic_consume(
                queue.into(),
                format!("bench-{connection}").as_str().into(),
                BasicConsumeOptions::default(),
                FieldTable::default(),
            )
            .await
            .map_err(|e| BenchError::new("basic_consume", e))?;
        Ok(RabbitConsumer {
            _connection: amqp,
            channel,
            consumer,
        })
    }
}

/// Unacked deliveries a consumer may hold: a few batches.
const PREFETCH: u16 = 64;

pub struct RabbitProducer {
    _connection: Connection,
    channel: Channel,
    queue: String,
}

impl Producer for RabbitProducer {
    /// Publishes the batch (persistent), then waits for every confirm.
    async fn send(&mut self, bodies: Vec<Bytes>) -> BenchResult<()> {
        let mut confirms = Vec::with_capacity(bodies.len());
        for body in bodies {
            let confirm = self
                .channel
                .basic_publish(
                    "".into(),
                    self.queue.as_str().into(),
                    BasicPublishOptions::default(),
                    &body,
                    BasicProperties::default().with_delivery_mode(2),
                )
                .await
                .map_err(|e| BenchError::new("publish", e))?;
            confirms.push(confirm);
        }
        for confirm in confirms {
            let confirmation = confirm.await.map_err(|e| BenchError::new("confirm", e))?;
            if confirmation.is_nack() {
                return Err(BenchError("publish nacked".into()));
            }
        }
        Ok(())
    }
}

pub struct RabbitConsumer {
    _connection: Connection,
    channel: Channel,
    consumer: lapin::Consumer,
}

impl Consumer for RabbitConsumer {
    type Token = u64;

    /// The first delivery within `wait`, then whatever else has arrived, up to `max`.
    async fn receive(&mut self, max: usize, wait: Duration) -> BenchResult<Vec<(Bytes, u64)>> {
        let mut received = Vec::with_capacity(max);
        let Ok(first) = tokio::time::timeout(wait, self.consumer.next()).await else {
            return Ok(received);
        };
        let mut next = first;
        loop {
            match next {
                Some(delivery) => {
                    let delivery = delivery.map_err(|e| BenchError::new("delivery", e))?;
                    received.push((Bytes::from(delivery.data), delivery.delivery_tag));
                }
                None => return Err(BenchError("consumer cancelled".into())),
            }
            if received.len() >= max {
                break;
            }
            match self.consumer.next().now_or_never() {
                Some(more) => next = more,
                None => break,
            }
        }
        Ok(received)
    }

    /// One ack for the batch: `multiple` acks every delivery up to the highest tag.
    async fn ack(&mut self, tags: Vec<u64>) -> BenchResult<()> {
        if let Some(&last) = tags.iter().max() {
            self.channel
                .basic_ack(last, BasicAckOptions { multiple: true })
                .await
                .map_err(|e| BenchError::new("ack", e))?;
        }
        Ok(())
    }
}
