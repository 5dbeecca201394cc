//! The steps of the CMQ queue guide, with Spool's Rust client: create a queue, send (one and a
//! batch), receive (one and a batch, long-polling), delete, rewind, and a delayed message.
//!
//!   cargo run --release -- serve                              # in one terminal
//!   cargo run --example cmq_guide [-- http://127.0.0.1:50051] # in another
//!
//! The endpoint is the first argument, else SPOOL_ENDPOINT, else http://127.0.0.1:50051.
//! It deletes its two queues (QueueForTest, QueueTest) at the end, so it can run again.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use futures_util::StreamExt as _;
use spool_client::{Client, ClientError, ClientOptions, QueueAttributes, ReceiveOptions};

#[tokio::main]
async fn main() -> Result<(), ClientError> {
    let endpoint = std::env::args()
        .nth(1)
        .or_else(|| std::env::var("SPOOL_ENDPOINT").ok())
        .unwrap_or_else(|| spool_client::DEFAULT_ENDPOINT.to_string());
    run(&endpoint).await
}

/// Runs the guide's steps against `endpoint`, printing what happens.
pub async fn run(endpoint: &str) -> Result<(), ClientError> {
    let client = Client::connect(endpoint, ClientOptions::default()).await?;

    // 1. Create a queue: a received message stays invisible for 10 s, bodies may have up to
    //    64 KiB, and a receive that does not say how long to wait waits up to 10 s.
    let queue = client
        .create_queue(
            "QueueForTest",
            QueueAttributes {
                visibility_timeout_seconds: Some(10),
                max_message_size: Some(65_536),
                polling_wait_seconds: Some(10),
                ..Default::default()
            },
        )
        .await?;
    println!("created {}: {:?}", queue.name, queue.attributes);

    // 2. Send a message, then a batch of three (all or nothing).
    let id = client
        .send_message("QueueForTest", "I am test message.")
        .await?;
    println!("sent message {id}");
    let bodies = (0..3).map(|i| format!("I am test message {i}."));
    let ids = client.batch_send_messages("QueueForTest", bodies).await?;
    println!("sent batch {ids:?}");

    // 3. Receive one message, waiting up to 3 s if none is visible (without a wait, the queue's
    //    polling wait applies), and delete it by its receipt handle before its visibility
    //    timeout ends (otherwise it is delivered again).
    let wait_3s = ReceiveOptions::default().wait_seconds(3);
    for message in client.receive("QueueForTest", wait_3s).await? {
        println!(
            "received {}: {:?}",
            message.message_id,
            String::from_utf8_lossy(&message.body)
        );
        client
            .delete_message("QueueForTest", &message.receipt_handle)
            .await?;
    }

    //    Receive up to 3 messages as a stream; fewer visible messages than asked for do not
    //    block. Then delete them in one call.
    let mut stream = client
        .receive_messages("QueueForTest", wait_3s.max_messages(3))
        .await?;
    let mut handles = Vec::new();
    while let Some(message) = stream.next().await {
        let message = message?;
        println!(
            "received {}: {:?}",
            message.message_id,
            String::from_utf8_lossy(&message.body)
        );
        handles.push(message.receipt_handle);
    }
    let failures = client
        .batch_delete_messages("QueueForTest", handles)
        .await?;
    println!("batch delete: {} failures", failures.len());

    // 4. Rewind. A queue with a rewind window (12 hours) keeps its deleted messages until their
    //    retention ends; rewinding to a time makes those enqueued since then receivable again.
    client
        .create_queue(
            "QueueTest",
            QueueAttributes {
                rewind_seconds: Some(43_200),
                ..Default::default()
            },
        )
        .await?;
    // The last good moment, in whole seconds like the guide's rewindQueue(1488718862).
    let start = whole_seconds(SystemTime::now());
    client.send_message("QueueTest", "i am test").await?;
    //    A consumer receives the message and deletes it...
    for message in client.receive("QueueTest", wait_3s).await? {
        client
            .delete_message("QueueTest", &message.receipt_handle)
            .await?;
    }
    //    ...then it turns out to have had a bug: rewind to the last good moment.
    let restored = client.rewind_queue("QueueTest", start).await?;
    println!("rewind: {restored} message(s) receivable again");
    for message in client.receive("QueueTest", wait_3s).await? {
        println!(
            "received {:?} again (dequeue_count {})",
            String::from_utf8_lossy(&message.body),
            message.dequeue_count
        );
        client
            .delete_message("QueueTest", &message.receipt_handle)
            .await?;
    }

    // 5. A delayed message: invisible for 600 s (10 minutes), e.g. to retry later. The queue's
    //    counters show it (CMQ's get_attributes().delayMsgNum).
    client
        .send_delayed_message("QueueForTest", "i am test", 600)
        .await?;
    let stats = client
        .get_queue("QueueForTest")
        .await?
        .stats
        .unwrap_or_default();
    println!("delayed messages: {}", stats.delayed_messages);

    // 6. Clean up: deleting a queue deletes its messages.
    client.delete_queue("QueueForTest").await?;
    client.delete_queue("QueueTest").await?;
    println!("deleted QueueForTest and QueueTest");
    Ok(())
}

fn whole_seconds(time: SystemTime) -> SystemTime {
    let since_epoch = time.duration_since(UNIX_EPOCH).unwrap_or_default();
    UNIX_EPOCH + Duration::from_secs(since_epoch.as_secs())
}
