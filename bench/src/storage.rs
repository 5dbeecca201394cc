//! `spool-bench storage`: the durable-send measurements behind the figures in docs/storage.md.
//! Targets 127.0.0.1 only; bounded by count or time. It calls the generated stubs directly (no
//! retries, no client-side timeouts), so a figure is the server's alone.
//!
//!   spool-bench storage send ENDPOINT PRODUCERS BATCH SECONDS
//!   spool-bench storage fill ENDPOINT MESSAGES BODY_BYTES [QUEUES]
//!   spool-bench storage first-receive ENDPOINT QUEUE

use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use clap::Subcommand;
use spool_client::pb;
use spool_client::pb::queue_service_client::QueueServiceClient;
use tonic::transport::Channel;

use crate::load::check_local;

/// A measurement of docs/storage.md.
#[derive(Subcommand)]
pub enum StorageCommand {
    /// PRODUCERS concurrent senders of BATCH messages (256 B) for SECONDS: prints acknowledged
    /// messages/s and the send-ack latency percentiles.
    Send {
        endpoint: String,
        producers: usize,
        batch: usize,
        seconds: u64,
    },
    /// Queues MESSAGES messages of BODY_BYTES in queue `fill` (64 producers, batch 16), or
    /// spread evenly over QUEUES queues `fill-0`, `fill-1`, ... when QUEUES is more than 1.
    Fill {
        endpoint: String,
        messages: usize,
        body_bytes: usize,
        #[arg(default_value_t = 1)]
        queues: usize,
    },
    /// Prints how long until a receive on QUEUE returns a message, retrying while the server
    /// starts (run it as the server restarts).
    FirstReceive { endpoint: String, queue: String },
}

type Client = QueueServiceClient<Channel>;

/// Runs one measurement and prints its result.
pub async fn run(command: StorageCommand) -> anyhow::Result<()> {
    match command {
        StorageCommand::Send {
            endpoint,
            producers,
            batch,
            seconds,
        } => {
            check_local(&endpoint)?;
            send(&endpoint, producers, batch, Duration::from_secs(seconds)).await
        }
        StorageCommand::Fill {
            endpoint,
            messages,
            body_bytes,
            queues,
        } => {
            check_local(&endpoint)?;
            fill(&endpoint, messages, body_bytes, queues.max(1)).await
        }
        StorageCommand::FirstReceive { endpoint, queue } => {
            check_local(&endpoint)?;
            first_receive(&endpoint, &queue).await
        }
    }
}

async fn connect(endpoint: &str) -> anyhow::Result<Client> {
    QueueServiceClient::connect(endpoint.to_string())
        .await
        .with_context(|| format!("connect to {endpoint}"))
}

async fn create(client: &mut Client, name: &str) -> anyhow::Result<()> {
    let _ = client
        .delete_queue(pb::DeleteQueueRequest {
            queue_name: name.into(),
        })
        .await;
    client
        .create_queue(pb::CreateQueueRequest {
            queue_name: name.into(),
            attributes: None,
        })
        .await?;
    Ok(())
}

fn batch_request(queue: &str, batch: usize, body: &[u8]) -> pb::BatchSendMessagesRequest {
    pb::BatchSendMessagesRequest {
        queue_name: queue.into(),
        entries: (0..batch)
            .map(|_| pb::BatchSendEntry {
                body: body.to_vec().into(),
                delay_seconds: None,
                ..Default::default()
            })
            .collect(),
    }
}

async fn send(
    endpoint: &str,
    producers: usize,
    batch: usize,
    duration: Duration,
) -> anyhow::Result<()> {
    let mut client = connect(endpoint).await?;
    let queue = format!("bench-p{producers}-b{batch}");
    create(&mut client, &queue).await?;
    let started = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..producers {
        // One connection per 8 producers: HTTP/2 multiplexes the rest.
        let mut client = client.clone();
        let queue = queue.clone();
        tasks.push(tokio::spawn(async move {
            let body = vec![b'x'; 256];
            let mut latencies = Vec::new();
            while started.elapsed() < duration {
                let sent = Instant::now();
                let ok = client
                    .batch_send_messages(batch_request(&queue, batch, &body))
                    .await
                    .is_ok();
                if ok {
                    latencies.push(sent.elapsed());
                }
            }
            latencies
        }));
    }
    let mut latencies = Vec::new();
    for task in tasks {
        latencies.extend(task.await?);
    }
    let elapsed = started.elapsed().as_secs_f64();
    latencies.sort();
    let pct = |p: f64| {
        latencies
            .get(((latencies.len() as f64 * p) as usize).min(latencies.len().saturating_sub(1)))
            .map(|d| d.as_secs_f64() * 1_000.0)
            .unwrap_or(0.0)
    };
    println!(
        "producers={producers} batch={batch} acked_msgs_per_s={:.0} ack_ms_p50={:.2} ack_ms_p99={:.2}",
        (latencies.len() * batch) as f64 / elapsed,
        pct(0.50),
        pct(0.99)
    );
    Ok(())
}

async fn fill(
    endpoint: &str,
    messages: usize,
    body_bytes: usize,
    queues: usize,
) -> anyhow::Result<()> {
    let mut client = connect(endpoint).await?;
    let names: Vec<String> = if queues == 1 {
        vec!["fill".to_string()]
    } else {
        (0..queues).map(|queue| format!("fill-{queue}")).collect()
    };
    for name in &names {
        create(&mut client, name).await?;
    }
    let names = std::sync::Arc::new(names);
    let started = Instant::now();
    let batches = messages.div_ceil(16);
    let producers = 64;
    let mut tasks = Vec::new();
    for producer in 0..producers {
        let mut client = client.clone();
        let names = names.clone();
        tasks.push(tokio::spawn(async move {
            let body = vec![b'x'; body_bytes];
            for batch in (producer..batches).step_by(producers) {
                let queue = &names[batch % names.len()];
                client
                    .batch_send_messages(batch_request(queue, 16, &body))
                    .await?;
            }
            Ok::<_, tonic::Status>(())
        }));
    }
    for task in tasks {
        task.await??;
    }
    println!(
        "filled {} messages of {body_bytes} B in {:.1} s",
        batches * 16,
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

async fn first_receive(endpoint: &str, queue: &str) -> anyhow::Result<()> {
    let started = Instant::now();
    loop {
        if let Ok(mut client) = connect(endpoint).await {
            let request = pb::ReceiveMessagesRequest {
                queue_name: queue.into(),
                max_messages: 1,
                wait_seconds: Some(0),
                visibility_timeout_seconds: None,
            };
            if let Ok(response) = client.receive_messages(request).await {
                let mut stream = response.into_inner();
                if let Ok(Some(_)) = stream.message().await {
                    println!(
                        "first message received {:.2} s after start",
                        started.elapsed().as_secs_f64()
                    );
                    return Ok(());
                }
            }
        }
        if started.elapsed() > Duration::from_secs(120) {
            bail!("no message within 120 s");
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}
