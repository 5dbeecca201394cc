//! The workloads: steady and fill-then-drain against any [`Target`]; long-poll idle and the
//! gRPC echo baseline against Spool. Each returns the [`Figures`] of one run.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::{BufMut as _, Bytes, BytesMut};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use super::stats::{
    CpuMeter, Figures, Latencies, Progress, add_latencies, listening_pid, resident_bytes, round,
};
use super::target::{BenchError, BenchResult, Consumer, Producer, SpoolTarget, Target};
use super::{ConsumeApi, Workload};
use spool_client::{ConsumeOptions, ReceiveOptions};

/// How long a consumer's receive waits for a message when none is visible.
const CONSUMER_WAIT: Duration = Duration::from_secs(1);
/// How long an idle long poll waits: longer than the gaps between the trickle's sends.
const IDLE_WAIT_SECONDS: u32 = 20;
/// Long polls per HTTP/2 connection in the idle workload (the server allows 1,024 streams on
/// one connection by default).
const STREAMS_PER_CONNECTION: usize = 500;
/// Connection numbers from here on are the idle workload's waiters (below: producers, consumers).
const WAITER_CONNECTIONS: usize = 1 << 20;
/// The smallest body: it carries the send time and a sequence number.
pub const MIN_BODY_BYTES: usize = 16;
const SEND_ACK_QUANTILES: &[f64] = &[0.5, 0.99, 0.999];
const END_TO_END_QUANTILES: &[f64] = &[0.5, 0.99, 0.999];

/// A body of `size` bytes that starts with its send time (nanoseconds since `epoch`) and `seq`.
fn body(size: usize, sent_nanos: u64, seq: u64) -> Bytes {
    let mut body = BytesMut::with_capacity(size);
    body.put_u64_le(sent_nanos);
    body.put_u64_le(seq);
    body.resize(size.max(MIN_BODY_BYTES), b'x');
    body.freeze()
}

/// The send time and sequence number a body starts with.
fn stamp(body: &[u8]) -> Option<(u64, u64)> {
    let sent = u64::from_le_bytes(body.get(0..8)?.try_into().ok()?);
    let seq = u64::from_le_bytes(body.get(8..16)?.try_into().ok()?);
    Some((sent, seq))
}

fn nanos_since(epoch: Instant) -> u64 {
    epoch.elapsed().as_nanos() as u64
}

/// What the producers and consumers of one run share.
struct Shared {
    epoch: Instant,
    deadline: Instant,
    /// Messages acknowledged by the target.
    acked: AtomicU64,
    /// Messages received and acknowledged by consumers.
    consumed: AtomicU64,
    /// Producers still sending: consumers stop once none is and everything acked is consumed.
    producers_left: AtomicUsize,
    /// When the last message was consumed (nanoseconds since `epoch`): the end of the run for
    /// throughput, not the consumers' last empty long poll.
    last_consumed: AtomicU64,
    progress: Progress,
    /// Cancelled once every message is consumed (or at the deadline), so consumers stop
    /// waiting in a long poll that can bring nothing.
    done: CancellationToken,
}

impl Shared {
    fn new(workload: &Workload, producers: usize) -> Arc<Self> {
        let epoch = Instant::now();
        Arc::new(Self {
            epoch,
            deadline: epoch + workload.max_duration,
            acked: AtomicU64::new(0),
            consumed: AtomicU64::new(0),
            producers_left: AtomicUsize::new(producers),
            last_consumed: AtomicU64::new(0),
            progress: Progress::default(),
            done: CancellationToken::new(),
        })
    }

    /// Whether consumers can stop; when they can, tells the ones waiting.
    fn consumers_done(&self) -> bool {
        let done = Instant::now() >= self.deadline
            || (self.producers_left.load(Ordering::Acquire) == 0
                && self.consumed.load(Ordering::Acquire) >= self.acked.load(Ordering::Acquire));
        if done {
            self.done.cancel();
        }
        done
    }
}

/// Sends `count` messages in batches, paced to `rate` messages/s when set; returns the
/// send-ack latencies.
async fn produce<P: Producer>(
    mut producer: P,
    shared: Arc<Shared>,
    workload: Workload,
    count: u64,
    rate: Option<f64>,
) -> BenchResult<Latencies> {
    let mut latencies = Latencies::new();
    let batch = workload.batch as u64;
    let interval = rate.map(|rate| Duration::from_secs_f64(batch as f64 / rate));
    let started = Instant::now();
    let mut sent = 0;
    let mut batches = 0u32;
    while sent < count && Instant::now() < shared.deadline {
        if let Some(interval) = interval {
            tokio::time::sleep_until((started + interval * batches).into()).await;
            batches += 1;
        }
        let n = batch.min(count - sent);
        let sent_at = Instant::now();
        let sent_nanos = nanos_since(shared.epoch);
        let bodies = (0..n)
            .map(|i| body(workload.body_bytes, sent_nanos, sent + i))
            .collect();
        producer.send(bodies).await?;
        latencies.record(sent_at.elapsed());
        shared.acked.fetch_add(n, Ordering::AcqRel);
        shared.progress.add(n);
        sent += n;
    }
    Ok(latencies)
}

/// Receives and acknowledges until the producers are done and everything is consumed;
/// returns the end-to-end latencies (send to receive).
async fn consume<C: Consumer>(
    mut consumer: C,
    shared: Arc<Shared>,
    workload: Workload,
    count_progress: bool,
) -> BenchResult<Latencies> {
    let mut latencies = Latencies::new();
    while !shared.consumers_done() {
        let received = tokio::select! {
            received = consumer.receive(workload.batch, CONSUMER_WAIT) => received?,
            _ = shared.done.cancelled() => break,
            _ = tokio::time::sleep_until(shared.deadline.into()) => break,
        };
        if received.is_empty() {
            continue;
        }
        let now = nanos_since(shared.epoch);
        let mut tokens = Vec::with_capacity(received.len());
        for (body, token) in received {
            if let Some((sent, _)) = stamp(&body) {
                latencies.record(Duration::from_nanos(now.saturating_sub(sent)));
            }
            tokens.push(token);
        }
        let n = tokens.len() as u64;
        consumer.ack(tokens).await?;
        shared.consumed.fetch_add(n, Ordering::AcqRel);
        shared
            .last_consumed
            .fetch_max(nanos_since(shared.epoch), Ordering::AcqRel);
        if count_progress {
            shared.progress.add(n);
        }
    }
    // Acknowledgements still in flight are part of the run.
    consumer.finish().await?;
    shared
        .last_consumed
        .fetch_max(nanos_since(shared.epoch), Ordering::AcqRel);
    shared.done.cancel();
    Ok(latencies)
}

/// Splits `total` into `parts` nearly equal counts.
fn share(total: u64, parts: usize, index: usize) -> u64 {
    let parts = parts as u64;
    total / parts + u64::from((index as u64) < total % parts)
}

async fn join_all(mut tasks: JoinSet<BenchResult<Latencies>>) -> BenchResult<Latencies> {
    let mut all = Latencies::new();
    while let Some(joined) = tasks.join_next().await {
        let latencies = joined.map_err(|error| BenchError::new("bench task failed", error))??;
        all.merge(&latencies);
    }
    Ok(all)
}

fn spawn_producers<T: Target>(
    target: &Arc<T>,
    shared: &Arc<Shared>,
    workload: &Workload,
    queues: &[String],
) -> JoinSet<BenchResult<Latencies>> {
    let mut tasks = JoinSet::new();
    let rate = workload.rate.map(|rate| rate / workload.producers as f64);
    for index in 0..workload.producers {
        let target = target.clone();
        let shared = shared.clone();
        let workload = workload.clone();
        let queue = queues[index % queues.len()].clone();
        let count = share(workload.messages, workload.producers, index);
        tasks.spawn(async move {
            let producer = target.producer(&queue, index).await?;
            let result = produce(producer, shared.clone(), workload, count, rate).await;
            shared.producers_left.fetch_sub(1, Ordering::AcqRel);
            shared.consumers_done();
            result
        });
    }
    tasks
}

fn spawn_consumers<T: Target>(
    target: &Arc<T>,
    shared: &Arc<Shared>,
    workload: &Workload,
    queues: &[String],
    count_progress: bool,
) -> JoinSet<BenchResult<Latencies>> {
    let mut tasks = JoinSet::new();
    for index in 0..workload.consumers {
        let target = target.clone();
        let shared = shared.clone();
        let workload = workload.clone();
        let queue = queues[index % queues.len()].clone();
        let connection = workload.producers + index;
        tasks.spawn(async move {
            let consumer = target.consumer(&queue, connection).await?;
            consume(consumer, shared, workload, count_progress).await
        });
    }
    tasks
}

/// The server's process, when it can be found (its memory and CPU are then read from /proc).
fn server_pid<T: Target>(target: &T) -> Option<u32> {
    listening_pid(target.server_port()?)
}

fn insert_cpu(figures: &mut Figures, name: &str, meter: Option<CpuMeter>, messages: u64) {
    if let Some(micros) = meter.and_then(|meter| meter.micros_per_message(messages)) {
        figures.insert(name.into(), micros);
    }
}

/// Producers and consumers at once; the run ends when every message sent is consumed.
pub async fn steady<T: Target>(target: Arc<T>, workload: &Workload) -> BenchResult<Figures> {
    let queues = workload.queue_names();
    target.setup(&queues, workload.body_bytes).await?;
    let shared = Shared::new(workload, workload.producers);
    let progress = shared
        .progress
        .show("steady".into(), workload.messages, shared.deadline);
    let pid = server_pid(&*target);
    let cpu = CpuMeter::server(pid);
    let client_cpu = CpuMeter::client();
    let producers = spawn_producers(&target, &shared, workload, &queues);
    let consumers = spawn_consumers(&target, &shared, workload, &queues, false);
    let send_ack = join_all(producers).await?;
    let end_to_end = join_all(consumers).await?;
    drop(progress);
    let mut figures = Figures::new();
    let consumed = shared.consumed.load(Ordering::Acquire);
    insert_cpu(&mut figures, "server_cpu_us_per_msg", cpu, consumed);
    insert_cpu(&mut figures, "client_cpu_us_per_msg", client_cpu, consumed);
    let rss = pid.and_then(resident_bytes);
    target.teardown(&queues).await?;

    let seconds = Duration::from_nanos(shared.last_consumed.load(Ordering::Acquire)).as_secs_f64();
    figures.insert(
        "messages_sent".into(),
        shared.acked.load(Ordering::Acquire) as f64,
    );
    figures.insert("messages_consumed".into(), consumed as f64);
    figures.insert("seconds".into(), round(seconds, 3));
    figures.insert(
        "end_to_end_msgs_per_s".into(),
        round(consumed as f64 / seconds.max(1e-9), 0),
    );
    add_latencies(&mut figures, "send_ack", &send_ack, SEND_ACK_QUANTILES);
    add_latencies(
        &mut figures,
        "end_to_end",
        &end_to_end,
        END_TO_END_QUANTILES,
    );
    if let Some(rss) = rss {
        figures.insert("server_rss_bytes".into(), rss as f64);
    }
    Ok(figures)
}

/// Sends a backlog of `messages`, then drains it; each phase timed on its own.
pub async fn fill_drain<T: Target>(target: Arc<T>, workload: &Workload) -> BenchResult<Figures> {
    let queues = workload.queue_names();
    target.setup(&queues, workload.body_bytes).await?;

    let shared = Shared::new(workload, workload.producers);
    let progress = shared
        .progress
        .show("fill".into(), workload.messages, shared.deadline);
    let pid = server_pid(&*target);
    let fill_cpu = CpuMeter::server(pid);
    let fill_client_cpu = CpuMeter::client();
    let send_ack = join_all(spawn_producers(&target, &shared, workload, &queues)).await?;
    drop(progress);
    let fill_seconds = shared.epoch.elapsed().as_secs_f64();
    let filled = shared.acked.load(Ordering::Acquire);
    let mut figures = Figures::new();
    insert_cpu(&mut figures, "fill_server_cpu_us_per_msg", fill_cpu, filled);
    insert_cpu(
        &mut figures,
        "fill_client_cpu_us_per_msg",
        fill_client_cpu,
        filled,
    );
    let rss_full = pid.and_then(resident_bytes);

    // The drain gets a fresh clock (and deadline); it must consume what the fill acked.
    let drain = Shared::new(workload, 0);
    drain.acked.store(filled, Ordering::Release);
    let progress = drain.progress.show("drain".into(), filled, drain.deadline);
    let drain_cpu = CpuMeter::server(pid);
    let drain_client_cpu = CpuMeter::client();
    let _ = join_all(spawn_consumers(&target, &drain, workload, &queues, true)).await?;
    drop(progress);
    let drained = drain.consumed.load(Ordering::Acquire);
    insert_cpu(
        &mut figures,
        "drain_server_cpu_us_per_msg",
        drain_cpu,
        drained,
    );
    insert_cpu(
        &mut figures,
        "drain_client_cpu_us_per_msg",
        drain_client_cpu,
        drained,
    );
    let drain_seconds =
        Duration::from_nanos(drain.last_consumed.load(Ordering::Acquire)).as_secs_f64();
    target.teardown(&queues).await?;

    figures.insert("messages_sent".into(), filled as f64);
    figures.insert("messages_consumed".into(), drained as f64);
    figures.insert("fill_seconds".into(), round(fill_seconds, 3));
    figures.insert("drain_seconds".into(), round(drain_seconds, 3));
    figures.insert(
        "fill_msgs_per_s".into(),
        round(filled as f64 / fill_seconds.max(1e-9), 0),
    );
    figures.insert(
        "drain_msgs_per_s".into(),
        round(drained as f64 / drain_seconds.max(1e-9), 0),
    );
    add_latencies(&mut figures, "send_ack", &send_ack, SEND_ACK_QUANTILES);
    if let Some(rss) = rss_full {
        figures.insert("server_rss_bytes".into(), rss as f64);
    }
    Ok(figures)
}

/// The trickle's default rate in the idle workload, messages/s.
pub const IDLE_DEFAULT_RATE: f64 = 100.0;

/// `waiters` long polls parked on Spool's queues, and a trickle of single sends (`messages` of
/// them at `rate`/s): how soon a send wakes a waiter, and the server's memory per waiter.
pub async fn idle(target: Arc<SpoolTarget>, workload: &Workload) -> BenchResult<Figures> {
    let queues = workload.queue_names();
    target.setup(&queues, workload.body_bytes).await?;
    let pid = server_pid(&*target);
    // Connections first, so the memory per waiter counts streams, not connections too.
    for connection in 0..workload.waiters.div_ceil(STREAMS_PER_CONNECTION) {
        let client = target.client(WAITER_CONNECTIONS + connection)?;
        client.list_queues("", 1, "").await?;
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
    let rss_before = pid.and_then(resident_bytes);

    let epoch = Instant::now();
    let deadline = epoch + workload.max_duration;
    let stop = CancellationToken::new();
    let opened = Arc::new(AtomicUsize::new(0));
    let all_open = Arc::new(tokio::sync::Notify::new());
    // Sequence number → when its send was acknowledged.
    let acks: Arc<Mutex<HashMap<u64, Instant>>> = Arc::default();
    let received = Arc::new(AtomicU64::new(0));
    let mut waiters = JoinSet::new();
    for index in 0..workload.waiters {
        let client = target.client(WAITER_CONNECTIONS + index / STREAMS_PER_CONNECTION)?;
        let queue = queues[index % queues.len()].clone();
        let (stop, opened, all_open, acks, received) = (
            stop.clone(),
            opened.clone(),
            all_open.clone(),
            acks.clone(),
            received.clone(),
        );
        let total = workload.waiters;
        let consume = workload.consume;
        waiters.spawn(async move {
            let mut wakeups = Latencies::new();
            let mut end_to_end = Latencies::new();
            if consume == ConsumeApi::Stream {
                let options = ConsumeOptions::default().max_outstanding_messages(1);
                let mut consumer = tokio::select! {
                    _ = stop.cancelled() => return Ok((wakeups, end_to_end)),
                    consumer = client.consume(&queue, options) => consumer?,
                };
                if opened.fetch_add(1, Ordering::AcqRel) + 1 == total {
                    all_open.notify_one();
                }
                loop {
                    let delivery = tokio::select! {
                        _ = stop.cancelled() => return Ok((wakeups, end_to_end)),
                        delivery = consumer.next_delivery() => delivery?,
                    };
                    let Some(delivery) = delivery else {
                        return Err(BenchError("a consumer stream ended".into()));
                    };
                    let now = Instant::now();
                    if let Some((sent, seq)) = stamp(&delivery.message().body) {
                        let sent_at = epoch + Duration::from_nanos(sent);
                        end_to_end.record(now.saturating_duration_since(sent_at));
                        let acked = acks.lock().ok().and_then(|acks| acks.get(&seq).copied());
                        wakeups.record(
                            acked.map_or(Duration::ZERO, |acked| {
                                now.saturating_duration_since(acked)
                            }),
                        );
                    }
                    delivery.ack().await?;
                    received.fetch_add(1, Ordering::AcqRel);
                }
            }
            let mut first = true;
            let options = ReceiveOptions::default()
                .max_messages(1)
                .wait_seconds(IDLE_WAIT_SECONDS);
            loop {
                let opening = client.receive_messages(&queue, options);
                let mut stream = tokio::select! {
                    _ = stop.cancelled() => break,
                    stream = opening => stream?,
                };
                if first {
                    first = false;
                    if opened.fetch_add(1, Ordering::AcqRel) + 1 == total {
                        all_open.notify_one();
                    }
                }
                loop {
                    let message = tokio::select! {
                        _ = stop.cancelled() => return Ok((wakeups, end_to_end)),
                        message = stream.message() => message?,
                    };
                    let Some(message) = message else { break };
                    let now = Instant::now();
                    if let Some((sent, seq)) = stamp(&message.body) {
                        let sent_at = epoch + Duration::from_nanos(sent);
                        end_to_end.record(now.saturating_duration_since(sent_at));
                        let acked = acks.lock().ok().and_then(|acks| acks.get(&seq).copied());
                        // Before the ack was seen: the waiter woke first, no later than the ack.
                        wakeups.record(
                            acked.map_or(Duration::ZERO, |acked| {
                                now.saturating_duration_since(acked)
                            }),
                        );
                    }
                    client
                        .delete_message(&queue, &message.receipt_handle)
                        .await?;
                    received.fetch_add(1, Ordering::AcqRel);
                }
            }
            Ok::<_, BenchError>((wakeups, end_to_end))
        });
    }
    tokio::select! {
        _ = all_open.notified() => {}
        _ = tokio::time::sleep_until(deadline.into()) => {
            stop.cancel();
            return Err(BenchError(format!(
                "only {} of {} long polls opened before the deadline",
                opened.load(Ordering::Acquire),
                workload.waiters
            )));
        }
        Some(joined) = waiters.join_next() => {
            stop.cancel();
            joined.map_err(|error| BenchError::new("waiter failed", error))??;
            return Err(BenchError("a long poll ended before all were open".into()));
        }
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
    let rss_parked = pid.and_then(resident_bytes);

    // The trickle: one message at a time, round robin over the queues.
    let producer = target.client(workload.producers.max(1))?;
    let rate = workload.rate.unwrap_or(IDLE_DEFAULT_RATE);
    let interval = Duration::from_secs_f64(1.0 / rate);
    let progress = Progress::default();
    let bar = progress.show("idle".into(), workload.messages, deadline);
    let mut send_ack = Latencies::new();
    let mut sent = 0u64;
    let trickle_started = Instant::now();
    while sent < workload.messages && Instant::now() < deadline {
        tokio::time::sleep_until((trickle_started + interval * sent as u32).into()).await;
        let sent_at = Instant::now();
        let message = body(workload.body_bytes, nanos_since(epoch), sent);
        producer
            .send_message(&queues[sent as usize % queues.len()], message)
            .await?;
        let acked = Instant::now();
        if let Ok(mut acks) = acks.lock() {
            acks.insert(sent, acked);
        }
        send_ack.record(acked - sent_at);
        sent += 1;
        progress.add(1);
    }
    // Let the last wake-ups arrive, then end the long polls.
    let settle = Instant::now() + Duration::from_secs(2);
    while received.load(Ordering::Acquire) < sent && Instant::now() < settle {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    drop(bar);
    stop.cancel();
    let mut wakeups = Latencies::new();
    let mut end_to_end = Latencies::new();
    while let Some(joined) = waiters.join_next().await {
        let (w, e) = joined.map_err(|error| BenchError::new("waiter failed", error))??;
        wakeups.merge(&w);
        end_to_end.merge(&e);
    }
    target.teardown(&queues).await?;

    let mut figures = Figures::new();
    figures.insert("waiters".into(), workload.waiters as f64);
    figures.insert("messages_sent".into(), sent as f64);
    figures.insert(
        "messages_consumed".into(),
        received.load(Ordering::Acquire) as f64,
    );
    add_latencies(&mut figures, "wakeup", &wakeups, &[0.5, 0.99, 0.999]);
    add_latencies(&mut figures, "end_to_end", &end_to_end, &[0.5, 0.99, 0.999]);
    add_latencies(&mut figures, "send_ack", &send_ack, SEND_ACK_QUANTILES);
    if let Some(rss) = rss_parked {
        figures.insert("server_rss_bytes".into(), rss as f64);
    }
    if let (Some(before), Some(parked)) = (rss_before, rss_parked) {
        let per_waiter = parked.saturating_sub(before) as f64 / workload.waiters.max(1) as f64;
        figures.insert("server_bytes_per_waiter".into(), round(per_waiter, 0));
    }
    Ok(figures)
}

/// The transport alone: `producers` callers of the standard health check (a unary gRPC call
/// with no storage behind it), `messages` calls in all.
pub async fn echo(target: Arc<SpoolTarget>, workload: &Workload) -> BenchResult<Figures> {
    use tonic_health::pb::HealthCheckRequest;
    use tonic_health::pb::health_client::HealthClient;

    let shared = Shared::new(workload, workload.producers);
    let progress = shared
        .progress
        .show("echo".into(), workload.messages, shared.deadline);
    let mut tasks = JoinSet::new();
    for index in 0..workload.producers {
        let endpoint = target.endpoint().to_string();
        let shared = shared.clone();
        let count = share(workload.messages, workload.producers, index);
        tasks.spawn(async move {
            let channel = tonic::transport::Endpoint::from_shared(endpoint)
                .map_err(|error| BenchError::new("endpoint", error))?
                .connect()
                .await
                .map_err(|error| BenchError::new("connect", error))?;
            let mut health = HealthClient::new(channel);
            let mut latencies = Latencies::new();
            for _ in 0..count {
                if Instant::now() >= shared.deadline {
                    break;
                }
                let started = Instant::now();
                health
                    .check(HealthCheckRequest {
                        service: String::new(),
                    })
                    .await
                    .map_err(|status| BenchError::new("health check", status))?;
                latencies.record(started.elapsed());
                shared.acked.fetch_add(1, Ordering::AcqRel);
                shared.progress.add(1);
            }
            Ok(latencies)
        });
    }
    let latencies = join_all(tasks).await?;
    drop(progress);
    let seconds = shared.epoch.elapsed().as_secs_f64();
    let calls = shared.acked.load(Ordering::Acquire);
    let mut figures = Figures::new();
    figures.insert("calls".into(), calls as f64);
    figures.insert(
        "calls_per_s".into(),
        round(calls as f64 / seconds.max(1e-9), 0),
    );
    add_latencies(&mut figures, "call", &latencies, SEND_ACK_QUANTILES);
    Ok(figures)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bodies_carry_their_stamp() {
        let body = body(256, 42, 7);
        assert_eq!(body.len(), 256);
        assert_eq!(stamp(&body), Some((42, 7)));
        assert_eq!(stamp(b"short"), None);
    }

    #[test]
    fn shares_add_up() {
        let total: u64 = (0..3).map(|i| share(10, 3, i)).sum();
        assert_eq!(total, 10);
    }
}
