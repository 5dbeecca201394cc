//! A small load generator for durable sends, used for the storage figures in
//! docs/benchmarks-storage.md. Targets 127.0.0.1 only; bounded by count or time.
//!
//!   cargo run --release --example send_bench -- ENDPOINT send PRODUCERS BATCH SECONDS
//!   cargo run --release --example send_bench -- ENDPOINT fill MESSAGES BODY_BYTES
//!   cargo run --release --example send_bench -- ENDPOINT first-receive QUEUE
//!
//! `send` runs PRODUCERS concurrent senders of BATCH messages (256 B) for SECONDS and prints
//! acknowledged messages/s and the send-ack latency percentiles. `fill` queues MESSAGES messages
//! in queue `fill` (64 producers, batch 16). `first-receive` prints how long until a receive
//! on QUEUE returns a message (retrying while the server starts).

use std::time::{Duration, Instant};

use spool::pb;
use spool::pb::queue_service_client::QueueServiceClient;
use tonic::transport::Channel;

type Client = QueueServiceClient<Channel>;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let arg = |i: usize| -> Result<&str, String> {
        args.get(i).map(String::as_str).ok_or_else(|| {
            format!("missing argument {i}; see the header of examples/send_bench.rs")
        })
    };
    let endpoint = arg(0)?.to_string();
    if !endpoint.contains("127.0.0.1") && !endpoint.contains("localhost") {
        return Err("benchmarks target 127.0.0.1 only".into());
    }
    match arg(1)? {
        "send" => {
            let producers: usize = arg(2)?.parse()?;
            let batch: usize = arg(3)?.parse()?;
            let seconds: u64 = arg(4)?.parse()?;
            send(&endpoint, producers, batch, Duration::from_secs(seconds)).await
        }
        "fill" => {
            let messages: usize = arg(2)?.parse()?;
            let body_bytes: usize = arg(3)?.parse()?;
            fill(&endpoint, messages, body_bytes).await
        }
        "first-receive" => first_receive(&endpoint, arg(2)?).await,
        other => Err(format!("unknown mode {other}").into()),
    }
}

async fn connect(endpoint: &str) -> Result<Client, Box<dyn std::error::Error>> {
    Ok(QueueServiceClient::connect(endpoint.to_string()).await?)
}

async fn create(client: &mut Client, name: &str) -> Result<(), Box<dyn std::error::Error>> {
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
            })
            .collect(),
    }
}

async fn send(
    endpoint: &str,
    producers: usize,
    batch: usize,
    duration: Duration,
) -> Result<(), Box<dyn std::error::Error>> {
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
) -> Result<(), Box<dyn std::error::Error>> {
    let mut client = connect(endpoint).await?;
    create(&mut client, "fill").await?;
    let started = Instant::now();
    let batches = messages.div_ceil(16);
    let producers = 64;
    let mut tasks = Vec::new();
    for producer in 0..producers {
        let mut client = client.clone();
        tasks.push(tokio::spawn(async move {
            let body = vec![b'x'; body_bytes];
            for _ in (producer..batches).step_by(producers) {
                client
                    .batch_send_messages(batch_request("fill", 16, &body))
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

async fn first_receive(endpoint: &str, queue: &str) -> Result<(), Box<dyn std::error::Error>> {
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
            return Err("no message within 120 s".into());
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}
