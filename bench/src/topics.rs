//! `spool-bench topics`: what a publish costs as its fan-out grows. For each fan-out K (1, 4
//! and 16 by default) it makes a topic with K subscribed queues, runs PUBLISHERS concurrent
//! publishers of 256-byte messages for SECONDS, and prints acknowledged publishes/s, copies/s,
//! the publish latency percentiles and the time per copy. The queues and the topic are deleted
//! afterwards. Targets 127.0.0.1 only; calls the generated stubs directly (no retries).
//!
//!   spool-bench topics ENDPOINT [--fan-out 1,4,16] [--publishers 16] [--seconds 10]

use std::time::{Duration, Instant};

use anyhow::Context as _;
use spool_client::pb;
use spool_client::pb::queue_service_client::QueueServiceClient;
use tonic::transport::Channel;

use crate::load::check_local;

/// The publish fan-out measurement.
#[derive(clap::Args)]
pub struct TopicsArgs {
    /// A running `spool serve`.
    endpoint: String,
    /// The fan-outs to measure: subscribed queues per topic.
    #[arg(long, value_delimiter = ',', default_value = "1,4,16")]
    fan_out: Vec<usize>,
    /// Concurrent publishers.
    #[arg(long, default_value_t = 16)]
    publishers: usize,
    /// Seconds each fan-out runs.
    #[arg(long, default_value_t = 10)]
    seconds: u64,
}

type Client = QueueServiceClient<Channel>;

pub async fn run(args: TopicsArgs) -> anyhow::Result<()> {
    check_local(&args.endpoint)?;
    let client = Client::connect(args.endpoint.clone())
        .await
        .with_context(|| format!("cannot connect to {}", args.endpoint))?;
    println!(
        "fan-out  publishes/s  copies/s  p50_ms  p99_ms  us_per_copy  ({} publishers, {} s each)",
        args.publishers, args.seconds
    );
    for &fan_out in &args.fan_out {
        let topic = format!("bench-fanout-{fan_out}");
        let queues: Vec<String> = (0..fan_out).map(|i| format!("{topic}-q{i}")).collect();
        let mut admin = client.clone();
        admin
            .create_topic(pb::CreateTopicRequest {
                topic_name: topic.clone(),
                attributes: None,
            })
            .await?;
        for (index, queue) in queues.iter().enumerate() {
            admin
                .create_queue(pb::CreateQueueRequest {
                    queue_name: queue.clone(),
                    attributes: None,
                })
                .await?;
            admin
                .subscribe(pb::SubscribeRequest {
                    topic_name: topic.clone(),
                    subscription_name: format!("s{index}"),
                    queue_name: queue.clone(),
                    ..Default::default()
                })
                .await?;
        }
        let until = Instant::now() + Duration::from_secs(args.seconds);
        let mut tasks = Vec::new();
        for _ in 0..args.publishers {
            let mut client = client.clone();
            let topic = topic.clone();
            tasks.push(tokio::spawn(async move {
                let mut latencies = Vec::new();
                while Instant::now() < until {
                    let started = Instant::now();
                    client
                        .publish_message(pb::PublishMessageRequest {
                            topic_name: topic.clone(),
                            body: vec![b'x'; 256].into(),
                            ..Default::default()
                        })
                        .await?;
                    latencies.push(started.elapsed());
                }
                Ok::<_, tonic::Status>(latencies)
            }));
        }
        let started = Instant::now();
        let mut latencies = Vec::new();
        for task in tasks {
            latencies.extend(task.await??);
        }
        let elapsed = started.elapsed().as_secs_f64();
        latencies.sort();
        let percentile = |p: f64| {
            latencies
                .get(((latencies.len() as f64 * p) as usize).min(latencies.len().saturating_sub(1)))
                .map_or(0.0, |d| d.as_secs_f64() * 1_000.0)
        };
        let publishes = latencies.len() as f64 / elapsed;
        let copies = publishes * fan_out as f64;
        println!(
            "{fan_out:>7}  {publishes:>11.0}  {copies:>8.0}  {:>6.2}  {:>6.2}  {:>11.1}",
            percentile(0.5),
            percentile(0.99),
            1_000_000.0 / copies
        );
        for queue in &queues {
            admin
                .delete_queue(pb::DeleteQueueRequest {
                    queue_name: queue.clone(),
                })
                .await?;
        }
        admin
            .delete_topic(pb::DeleteTopicRequest { topic_name: topic })
            .await?;
    }
    Ok(())
}
