//! PostgreSQL in the pgmq pattern: a table per queue, a visibility timestamp, receives that
//! claim rows with `FOR UPDATE SKIP LOCKED`, deletes by id; `synchronous_commit = on`.

use std::time::{Duration, Instant};

use crate::load::{BenchError, BenchResult, Consumer, Producer, Target};
use bytes::Bytes;
use tokio_postgres::{Client, NoTls};

/// How long a claimed row stays invisible: longer than a run.
const VISIBILITY_SECONDS: u32 = 600;
/// How often an empty receive polls again (pgmq's read_with_poll polls; it has no push).
const POLL_INTERVAL: Duration = Duration::from_millis(10);

pub struct PostgresTarget {
    config: String,
}

impl PostgresTarget {
    pub fn new(config: &str) -> Self {
        Self {
            config: config.into(),
        }
    }

    async fn connect(&self) -> BenchResult<Client> {
        let (client, connection) = tokio_postgres::connect(&self.config, NoTls)
            .await
            .map_err(|e| BenchError::new("connect to PostgreSQL", e))?;
        tokio::spawn(async move {
            let _ = connection.await;
        });
        client
            .batch_execute("SET synchronous_commit = on")
            .await
            .map_err(|e| BenchError::new("set synchronous_commit", e))?;
        Ok(client)
    }
}

/// The table of a queue: queue names have '-', which SQL identifiers would need quoted.
fn table(queue: &str) -> String {
    format!("q_{}", queue.replace('-', "_"))
}

impl Target for PostgresTarget {
    type Producer = PostgresProducer;
    type Consumer = PostgresConsumer;

    fn name(&self) -> &str {
        "postgres"
    }

    fn durability(&self) -> String {
        "synchronous_commit=on (fsync=on, WAL flushed before the commit returns); a batch is \
         one INSERT"
            .into()
    }

    fn server_port(&self) -> Option<u16> {
        self.config
            .split_whitespace()
            .find_map(|pair| pair.strip_prefix("port="))
            .map_or(Some(5432), |port| port.parse().ok())
    }

    async fn setup(&self, queues: &[String], _body_bytes: usize) -> BenchResult<()> {
        let client = self.connect().await?;
        for queue in queues {
            let table = table(queue);
            client
                .batch_execute(&format!(
                    "DROP TABLE IF EXISTS {table};
                     CREATE TABLE {table} (
                         msg_id bigserial PRIMARY KEY,
                         read_ct integer NOT NULL DEFAULT 0,
                         enqueued_at timestamptz NOT NULL DEFAULT now(),
                         vt timestamptz NOT NULL DEFAULT now(),
                         message bytea NOT NULL
                     );
                     CREATE INDEX ON {table} (vt);"
                ))
                .await
                .map_err(|e| BenchError::new("create table", e))?;
        }
        Ok(())
    }

    async fn teardown(&self, queues: &[String]) -> BenchResult<()> {
        let client = self.connect().await?;
        for queue in queues {
            client
                .batch_execute(&format!("DROP TABLE IF EXISTS {}", table(queue)))
                .await
                .map_err(|e| BenchError::new("drop table", e))?;
        }
        Ok(())
    }

    async fn producer(&self, queue: &str, _connection: usize) -> BenchResult<PostgresProducer> {
        let client = self.connect().await?;
        let insert = client
            .prepare(&format!(
                "INSERT INTO {} (message) SELECT unnest($1::bytea[])",
                table(queue)
            ))
            .await
            .map_err(|e| BenchError::new("prepare", e))?;
        Ok(PostgresProducer { client, insert })
    }

    async fn consumer(&self, queue: &str, _connection: usize) -> BenchResult<PostgresConsumer> {
        let client = self.connect().await?;
        let table = table(queue);
        let read = client
            .prepare(&format!(
                "WITH claimed AS (
                     SELECT msg_id FROM {table}
                     WHERE vt <= clock_timestamp()
                     ORDER BY msg_id
                     LIMIT $1
                     FOR UPDATE SKIP LOCKED
                 )
                 UPDATE {table} m
                 SET vt = clock_timestamp() + interval '{VISIBILITY_SECONDS} seconds',
                     read_ct = read_ct + 1
                 FROM claimed
                 WHERE m.msg_id = claimed.msg_id
                 RETURNING m.msg_id, m.message"
            ))
            .await
            .map_err(|e| BenchError::new("prepare", e))?;
        let delete = client
            .prepare(&format!("DELETE FROM {table} WHERE msg_id = ANY($1)"))
            .await
            .map_err(|e| BenchError::new("prepare", e))?;
        Ok(PostgresConsumer {
            client,
            read,
            delete,
        })
    }
}

pub struct PostgresProducer {
    client: Client,
    insert: tokio_postgres::Statement,
}

impl Producer for PostgresProducer {
    async fn send(&mut self, bodies: Vec<Bytes>) -> BenchResult<()> {
        let bodies: Vec<&[u8]> = bodies.iter().map(|body| &body[..]).collect();
        self.client
            .execute(&self.insert, &[&bodies])
            .await
            .map_err(|e| BenchError::new("insert", e))?;
        Ok(())
    }
}

pub struct PostgresConsumer {
    client: Client,
    read: tokio_postgres::Statement,
    delete: tokio_postgres::Statement,
}

impl Consumer for PostgresConsumer {
    type Token = i64;

    /// Claims up to `max` visible rows, polling every [`POLL_INTERVAL`] for up to `wait`.
    async fn receive(&mut self, max: usize, wait: Duration) -> BenchResult<Vec<(Bytes, i64)>> {
        let deadline = Instant::now() + wait;
        loop {
            let rows = self
                .client
                .query(&self.read, &[&(max as i64)])
                .await
                .map_err(|e| BenchError::new("read", e))?;
            if !rows.is_empty() || Instant::now() >= deadline {
                return Ok(rows
                    .iter()
                    .map(|row| (Bytes::from(row.get::<_, Vec<u8>>(1)), row.get(0)))
                    .collect());
            }
            tokio::time::sleep(POLL_INTERVAL).await;
        }
    }

    async fn ack(&mut self, ids: Vec<i64>) -> BenchResult<()> {
        self.client
            .execute(&self.delete, &[&ids])
            .await
            .map_err(|e| BenchError::new("delete", e))?;
        Ok(())
    }
}
