//! NATS JetStream: a work-queue stream with file storage per queue, one durable pull consumer
//! shared by the bench's consumers, explicit acks.

use std::time::Duration;

use crate::load::{BenchError, BenchResult, Consumer, Producer, Target};
use async_nats::jetstream::{self, consumer, stream};
use bytes::Bytes;
use futures_util::StreamExt as _;

/// The durable consumer every bench consumer pulls from.
const CONSUMER_NAME: &str = "bench";
/// How long a pulled message may stay unacked before it is delivered again: longer than a run.
const ACK_WAIT: Duration = Duration::from_secs(600);

pub struct NatsTarget {
    url: String,
}

impl NatsTarget {
    pub fn new(url: &str) -> Self {
        Self { url: url.into() }
    }

    async fn context(&self) -> BenchResult<jetstream::Context> {
        let client = async_nats::connect(&self.url)
            .await
            .map_err(|e| BenchError::new("connect to NATS", e))?;
        Ok(jetstream::new(client))
    }
}

fn subject(queue: &str) -> String {
    format!("{queue}.messages")
}

impl Target for NatsTarget {
    type Producer = NatsProducer;
    type Consumer = NatsConsumer;

    fn name(&self) -> &str {
        "nats"
    }

    fn durability(&self) -> String {
        "JetStream file storage, R1, server default sync_interval (2 min): a publish is acked \
         once written to the OS, not fsynced"
            .into()
    }

    fn server_port(&self) -> Option<u16> {
        self.url.rsplit(':').next()?.parse().ok()
    }

    async fn setup(&self, queues: &[String], _body_bytes: usize) -> BenchResult<()> {
        let context = self.context().await?;
        for queue in queues {
            let _ = context.delete_stream(queue).await;
            let stream = context
                .create_stream(stream::Config {
                    name: queue.clone(),
                    subjects: vec![subject(queue)],
                    retention: stream::RetentionPolicy::WorkQueue,
                    storage: stream::StorageType::File,
                    num_replicas: 1,
                    ..Default::default()
                })
                .await
                .map_err(|e| BenchError::new("create stream", e))?;
            stream
                .create_consumer(consumer::pull::Config {
                    durable_name: Some(CONSUMER_NAME.into()),
                    ack_policy: consumer::AckPolicy::Explicit,
                    ack_wait: ACK_WAIT,
                    max_ack_pending: 100_000,
                    ..Default::default()
                })
                .await
                .map_err(|e| BenchError::new("create consumer", e))?;
        }
        Ok(())
    }

    async fn teardown(&self, queues: &[String]) -> BenchResult<()> {
        let context = self.context().await?;
        for queue in queues {
            context
                .delete_stream(queue)
                .await
                .map_err(|e| BenchError::new("delete stream", e))?;
        }
        Ok(())
    }

    async fn producer(&self, queue: &str, _connection: usize) -> BenchResult<NatsProducer> {
        Ok(NatsProducer {
            context: self.context().await?,
            subject: subject(queue),
        })
    }

    async fn consumer(&self, queue: &str, _connection: usize) -> BenchResult<NatsConsumer> {
        let context = self.context().await?;
        let consumer = context
            .get_consumer_from_stream(CONSUMER_NAME, queue)
            .await
            .map_err(|e| BenchError::new("get consumer", e))?;
        Ok(NatsConsumer { consumer })
    }
}

pub struct NatsProducer {
    context: jetstream::Context,
    subject: String,
}

impl Producer for NatsProducer {
    /// Publishes the batch, then waits for every publish ack.
    async fn send(&mut self, bodies: Vec<Bytes>) -> BenchResult<()> {
        let mut acks = Vec::with_capacity(bodies.len());
        for body in bodies {
            let ack = self
                .context
                .publish(self.subject.clone(), body)
                .await
                .map_err(|e| BenchError::new("publish", e))?;
            acks.push(ack);
        }
        for ack in acks {
            ack.await.map_err(|e| BenchError::new("publish ack", e))?;
        }
        Ok(())
    }
}

pub struct NatsConsumer {
    consumer: consumer::Consumer<consumer::pull::Config>,
}

impl Consumer for NatsConsumer {
    type Token = jetstream::Message;

    async fn receive(
        &mut self,
        max: usize,
        wait: Duration,
    ) -> BenchResult<Vec<(Bytes, jetstream::Message)>> {
        let mut batch = self
            .consumer
            .fetch()
            .max_messages(max)
            .expires(wait)
            .messages()
            .await
            .map_err(|e| BenchError::new("fetch", e))?;
        let mut received = Vec::with_capacity(max);
        while let Some(message) = batch.next().await {
            let message = message.map_err(|e| BenchError::new("fetch", e))?;
            received.push((message.payload.clone(), message));
        }
        Ok(received)
    }

    /// One ack per message (JetStream has no batch ack for explicit acks), not waited for.
    async fn ack(&mut self, messages: Vec<jetstream::Message>) -> BenchResult<()> {
        for message in messages {
            message.ack().await.map_err(|e| BenchError::new("ack", e))?;
        }
        Ok(())
    }
}
