//! The topic commands of the `spool` binary: `spool topic create|get|update|delete|list`,
//! `spool subscribe`, `spool unsubscribe`, `spool subscriptions` and `spool publish`. Output is
//! one JSON object per line, as for the queue commands.

use std::io::{Read as _, Write};

use clap::{Args, Subcommand, ValueEnum};
use serde_json::{Value, json};
use spool_client::{Client, FilterType, PublishOptions, Subscription, Topic, TopicAttributes};

use super::time::format_timestamp;
use super::{CliError, EndpointArg, attribute_pair, print, u32_in};
use crate::limits::MAX_MESSAGE_SIZE;

/// `spool topic`: its subcommand, and the connection flags for all of them.
#[derive(Args, Debug)]
pub struct TopicArgs {
    #[command(flatten)]
    pub endpoint: EndpointArg,
    #[command(subcommand)]
    pub command: TopicCommand,
}

/// How a topic's subscriptions filter its messages.
#[derive(ValueEnum, Clone, Copy, Debug)]
pub enum FilterTypeArg {
    /// Messages carry tags; a subscription takes those carrying any of its filter tags.
    Tags,
    /// Messages carry a routing key; a subscription takes those one of its binding keys
    /// matches (`*` one word, `#` zero or more).
    RoutingKeys,
}

#[derive(Subcommand, Debug)]
pub enum TopicCommand {
    /// Creates a topic (or shows it, if it exists with the same attributes).
    Create {
        name: String,
        /// Largest message in bytes, body and attributes (1024..=1048576; default 65536).
        #[arg(long, value_name = "B", allow_negative_numbers = true,
              value_parser = u32_in(MAX_MESSAGE_SIZE))]
        max_message_size: Option<u32>,
        /// How subscriptions filter (default: tags); fixed once the topic exists.
        #[arg(long, value_enum)]
        filter_type: Option<FilterTypeArg>,
    },
    /// Shows a topic's attributes and counters.
    Get { name: String },
    /// Changes a topic's max message size.
    Update {
        name: String,
        /// Largest message in bytes (1024..=1048576).
        #[arg(long, value_name = "B", allow_negative_numbers = true,
              value_parser = u32_in(MAX_MESSAGE_SIZE))]
        max_message_size: Option<u32>,
    },
    /// Deletes a topic and its subscriptions (not their queues).
    Delete { name: String },
    /// Prints every topic (one JSON object per line), in name order.
    List {
        /// Only topics whose name starts with this.
        #[arg(long, default_value = "")]
        prefix: String,
    },
}

#[derive(Args, Debug)]
pub struct SubscribeArgs {
    /// The topic.
    topic: String,
    /// The subscription's name (unique within the topic).
    subscription: String,
    /// The queue copies go to.
    #[arg(long, value_name = "QUEUE")]
    queue: String,
    /// A filter tag, for a topic filtering by tags (repeat for more; none: every message).
    #[arg(long = "tag", value_name = "TAG")]
    tags: Vec<String>,
    /// A binding key, for a topic filtering by routing keys (repeat for more; none: every
    /// message).
    #[arg(long = "binding-key", value_name = "KEY")]
    binding_keys: Vec<String>,
    #[command(flatten)]
    pub endpoint: EndpointArg,
}

#[derive(Args, Debug)]
pub struct SubscriptionArgs {
    /// The topic.
    topic: String,
    /// The subscription.
    subscription: String,
    #[command(flatten)]
    pub endpoint: EndpointArg,
}

#[derive(Args, Debug)]
pub struct TopicNameArg {
    /// The topic.
    topic: String,
    #[command(flatten)]
    pub endpoint: EndpointArg,
}

#[derive(Args, Debug)]
pub struct PublishArgs {
    /// The topic.
    topic: String,
    /// The message body; read from stdin (all of it, as bytes) when absent.
    body: Option<String>,
    /// A tag, for a topic filtering by tags (repeat for more; at most 16).
    #[arg(long = "tag", value_name = "TAG")]
    tags: Vec<String>,
    /// The routing key, for a topic filtering by routing keys (dot-separated words).
    #[arg(long, value_name = "KEY")]
    routing_key: Option<String>,
    /// A message attribute, key=value (repeat for more; at most 16).
    #[arg(long = "attr", value_name = "KEY=VALUE", value_parser = attribute_pair)]
    attributes: Vec<(String, String)>,
    /// The publish's deduplication id: a queue that accepted a copy with it within its
    /// deduplication window takes no second one. Without it, the client makes one.
    #[arg(long, value_name = "ID")]
    dedup_id: Option<String>,
    #[command(flatten)]
    pub endpoint: EndpointArg,
}

fn topic_json(topic: &Topic) -> Value {
    let attributes = topic.attributes.unwrap_or_default();
    let stats = topic.stats.unwrap_or_default();
    json!({
        "name": topic.name,
        "attributes": {
            "max_message_size": attributes.max_message_size,
            "filter_type": filter_type_name(attributes.filter_type),
        },
        "subscription_count": topic.subscription_count,
        "stats": {
            "published_messages": stats.published_messages,
            "unrouted_messages": stats.unrouted_messages,
        },
        "create_time": topic.create_time.as_ref().map(format_timestamp),
        "update_time": topic.update_time.as_ref().map(format_timestamp),
    })
}

fn filter_type_name(value: i32) -> &'static str {
    match FilterType::try_from(value) {
        Ok(FilterType::RoutingKeys) => "routing-keys",
        _ => "tags",
    }
}

fn subscription_json(subscription: &Subscription) -> Value {
    json!({
        "topic_name": subscription.topic_name,
        "name": subscription.name,
        "queue_name": subscription.queue_name,
        "filter_tags": subscription.filter_tags,
        "binding_keys": subscription.binding_keys,
        "create_time": subscription.create_time.as_ref().map(format_timestamp),
        "delivered_messages": subscription.delivered_messages,
        "filtered_out_messages": subscription.filtered_out_messages,
    })
}

pub async fn topic(
    client: &Client,
    command: TopicCommand,
    stdout: &mut impl Write,
) -> Result<(), CliError> {
    match command {
        TopicCommand::Create {
            name,
            max_message_size,
            filter_type,
        } => {
            let filter_type = match filter_type {
                Some(FilterTypeArg::Tags) => FilterType::Tags,
                Some(FilterTypeArg::RoutingKeys) => FilterType::RoutingKeys,
                None => FilterType::Unspecified,
            };
            let attributes = TopicAttributes {
                max_message_size,
                filter_type: filter_type as i32,
            };
            let topic = client.create_topic(&name, attributes).await?;
            print(stdout, &topic_json(&topic))
        }
        TopicCommand::Get { name } => print(stdout, &topic_json(&client.get_topic(&name).await?)),
        TopicCommand::Update {
            name,
            max_message_size,
        } => {
            let attributes = TopicAttributes {
                max_message_size,
                ..Default::default()
            };
            print(
                stdout,
                &topic_json(&client.update_topic(&name, attributes).await?),
            )
        }
        TopicCommand::Delete { name } => {
            client.delete_topic(&name).await?;
            print(stdout, &json!({ "topic_name": name, "deleted": true }))
        }
        TopicCommand::List { prefix } => {
            let mut token = String::new();
            loop {
                let page = client.list_topics(&prefix, 0, &token).await?;
                for topic in &page.topics {
                    print(stdout, &topic_json(topic))?;
                }
                if page.next_page_token.is_empty() || page.next_page_token == token {
                    return Ok(());
                }
                token = page.next_page_token;
            }
        }
    }
}

pub async fn subscribe(
    client: &Client,
    args: SubscribeArgs,
    stdout: &mut impl Write,
) -> Result<(), CliError> {
    let subscription = client
        .subscribe(
            &args.topic,
            &args.subscription,
            &args.queue,
            args.tags,
            args.binding_keys,
        )
        .await?;
    print(stdout, &subscription_json(&subscription))
}

pub async fn unsubscribe(
    client: &Client,
    args: SubscriptionArgs,
    stdout: &mut impl Write,
) -> Result<(), CliError> {
    client.unsubscribe(&args.topic, &args.subscription).await?;
    print(
        stdout,
        &json!({
            "topic_name": args.topic,
            "name": args.subscription,
            "deleted": true,
        }),
    )
}

pub async fn subscriptions(
    client: &Client,
    args: TopicNameArg,
    stdout: &mut impl Write,
) -> Result<(), CliError> {
    let mut token = String::new();
    loop {
        let page = client.list_subscriptions(&args.topic, 0, &token).await?;
        for subscription in &page.subscriptions {
            print(stdout, &subscription_json(subscription))?;
        }
        if page.next_page_token.is_empty() || page.next_page_token == token {
            return Ok(());
        }
        token = page.next_page_token;
    }
}

pub async fn publish(
    client: &Client,
    args: PublishArgs,
    stdout: &mut impl Write,
) -> Result<(), CliError> {
    let body = match args.body {
        Some(body) => body.into_bytes(),
        None => {
            let mut body = Vec::new();
            std::io::stdin()
                .read_to_end(&mut body)
                .map_err(CliError::Stdin)?;
            body
        }
    };
    let mut options = PublishOptions::default();
    for tag in args.tags {
        options = options.tag(tag);
    }
    if let Some(key) = args.routing_key {
        options = options.routing_key(key);
    }
    for (key, value) in args.attributes {
        options = options.attribute(key, value);
    }
    if let Some(id) = args.dedup_id {
        options = options.deduplication_id(id);
    }
    let published = client
        .publish_message_with(&args.topic, body, options)
        .await?;
    let copies: Vec<Value> = published
        .copies
        .iter()
        .map(|copy| {
            json!({
                "subscription_name": copy.subscription_name,
                "queue_name": copy.queue_name,
                "message_id": copy.message_id,
            })
        })
        .collect();
    print(
        stdout,
        &json!({ "message_id": published.message_id, "copies": copies }),
    )
}
