//! Queue lifecycle over gRPC: names, create/get/update/delete, list, limits, errors.

use spool::pb;
use tonic::Code;

use crate::common::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn create_fills_defaults_and_is_idempotent() {
    let server = TestServer::start().await;
    let mut client = server.client().await;
    let queue = create(&mut client, "orders", attrs()).await;
    let a = queue.attributes.expect("attributes");
    assert_eq!(a.visibility_timeout_seconds, Some(30));
    assert_eq!(a.polling_wait_seconds, Some(0));
    assert_eq!(a.max_message_size, Some(65_536));
    assert_eq!(a.message_retention_seconds, Some(345_600));
    assert_eq!(a.rewind_seconds, Some(0));
    assert_eq!(a.max_backlog, Some(100_000_000));
    assert!(queue.create_time.is_some());
    assert_eq!(queue.create_time, queue.update_time);

    // Same attributes (explicitly or by default): the same queue comes back.
    let again = create(
        &mut client,
        "orders",
        pb::QueueAttributes {
            visibility_timeout_seconds: Some(30),
            ..attrs()
        },
    )
    .await;
    assert_eq!(again.create_time, queue.create_time);

    // Different attributes: ALREADY_EXISTS.
    let status = client
        .create_queue(pb::CreateQueueRequest {
            queue_name: "orders".into(),
            attributes: Some(pb::QueueAttributes {
                visibility_timeout_seconds: Some(31),
                ..attrs()
            }),
        })
        .await
        .unwrap_err();
    assert_error(&status, Code::AlreadyExists, 4460);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn names_are_validated() {
    let server = TestServer::start().await;
    let mut client = server.client().await;
    let too_long = "q".repeat(65);
    for bad in [
        "",
        "1queue",
        "-q",
        "has space",
        "dot.ted",
        "ünicode",
        too_long.as_str(),
    ] {
        let status = client
            .create_queue(pb::CreateQueueRequest {
                queue_name: bad.into(),
                attributes: None,
            })
            .await
            .unwrap_err();
        let message = assert_error(&status, Code::InvalidArgument, 4000);
        assert!(message.contains("queue_name"), "{message}");
        // Other calls refuse the name the same way rather than saying "not found".
        let status = client
            .get_queue(pb::GetQueueRequest {
                queue_name: bad.into(),
            })
            .await
            .unwrap_err();
        assert_eq!(status.code(), Code::InvalidArgument);
    }
    let longest = "Q".repeat(64);
    for good in ["a", "Queue-1_x", longest.as_str()] {
        create(&mut client, good, attrs()).await;
    }
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn attributes_are_validated_with_field_and_limit() {
    let server = TestServer::start().await;
    let mut client = server.client().await;
    let cases: Vec<(pb::QueueAttributes, &str, &str)> = vec![
        (
            pb::QueueAttributes {
                visibility_timeout_seconds: Some(0),
                ..attrs()
            },
            "visibility_timeout_seconds",
            "1..=43200",
        ),
        (
            pb::QueueAttributes {
                visibility_timeout_seconds: Some(43_201),
                ..attrs()
            },
            "visibility_timeout_seconds",
            "1..=43200",
        ),
        (
            pb::QueueAttributes {
                polling_wait_seconds: Some(31),
                ..attrs()
            },
            "polling_wait_seconds",
            "0..=30",
        ),
        (
            pb::QueueAttributes {
                max_message_size: Some(1_023),
                ..attrs()
            },
            "max_message_size",
            "1024..=1048576",
        ),
        (
            pb::QueueAttributes {
                max_message_size: Some(1_048_577),
                ..attrs()
            },
            "max_message_size",
            "1024..=1048576",
        ),
        (
            pb::QueueAttributes {
                message_retention_seconds: Some(59),
                ..attrs()
            },
            "message_retention_seconds",
            "60..=1296000",
        ),
        (
            pb::QueueAttributes {
                message_retention_seconds: Some(1_296_001),
                ..attrs()
            },
            "message_retention_seconds",
            "60..=1296000",
        ),
        (
            pb::QueueAttributes {
                message_retention_seconds: Some(600),
                rewind_seconds: Some(601),
                ..attrs()
            },
            "rewind_seconds",
            "0..=600",
        ),
        (
            pb::QueueAttributes {
                max_backlog: Some(0),
                ..attrs()
            },
            "max_backlog",
            "1..=1000000000",
        ),
        (
            pb::QueueAttributes {
                max_backlog: Some(1_000_000_001),
                ..attrs()
            },
            "max_backlog",
            "1..=1000000000",
        ),
    ];
    for (attributes, field, limit) in cases {
        let status = client
            .create_queue(pb::CreateQueueRequest {
                queue_name: "q".into(),
                attributes: Some(attributes),
            })
            .await
            .unwrap_err();
        let message = assert_error(&status, Code::InvalidArgument, 4000);
        assert!(
            message.contains(field) && message.contains(limit),
            "{message}"
        );
    }
    // Nothing was created by the refused calls.
    let status = client
        .get_queue(pb::GetQueueRequest {
            queue_name: "q".into(),
        })
        .await
        .unwrap_err();
    assert_error(&status, Code::NotFound, 4440);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn update_changes_only_the_fields_set() {
    let server = TestServer::start().await;
    let mut client = server.client().await;
    let created = create(
        &mut client,
        "q",
        pb::QueueAttributes {
            visibility_timeout_seconds: Some(10),
            ..attrs()
        },
    )
    .await;
    tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    let updated = client
        .update_queue(pb::UpdateQueueRequest {
            queue_name: "q".into(),
            attributes: Some(pb::QueueAttributes {
                polling_wait_seconds: Some(5),
                max_backlog: Some(7),
                ..attrs()
            }),
        })
        .await
        .expect("update")
        .into_inner();
    let a = updated.attributes.expect("attributes");
    assert_eq!(a.visibility_timeout_seconds, Some(10));
    assert_eq!(a.polling_wait_seconds, Some(5));
    assert_eq!(a.max_backlog, Some(7));
    assert_eq!(updated.create_time, created.create_time);
    assert_ne!(updated.update_time, created.update_time);
    assert_eq!(get(&mut client, "q").await.attributes, Some(a));

    // Update validates like create, against the resulting attributes.
    let status = client
        .update_queue(pb::UpdateQueueRequest {
            queue_name: "q".into(),
            attributes: Some(pb::QueueAttributes {
                rewind_seconds: Some(345_601),
                ..attrs()
            }),
        })
        .await
        .unwrap_err();
    assert_error(&status, Code::InvalidArgument, 4000);
    let status = client
        .update_queue(pb::UpdateQueueRequest {
            queue_name: "missing".into(),
            attributes: None,
        })
        .await
        .unwrap_err();
    assert_error(&status, Code::NotFound, 4440);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delete_drops_messages_and_the_name_can_be_reused() {
    let server = TestServer::start().await;
    let mut client = server.client().await;
    create(&mut client, "q", attrs()).await;
    send(&mut client, "q", b"one").await;
    client
        .delete_queue(pb::DeleteQueueRequest {
            queue_name: "q".into(),
        })
        .await
        .expect("delete");
    let status = client
        .get_queue(pb::GetQueueRequest {
            queue_name: "q".into(),
        })
        .await
        .unwrap_err();
    assert_error(&status, Code::NotFound, 4440);
    let status = client
        .send_message(pb::SendMessageRequest {
            queue_name: "q".into(),
            body: b"x".to_vec().into(),
            delay_seconds: None,
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_error(&status, Code::NotFound, 4440);
    let status = client
        .delete_queue(pb::DeleteQueueRequest {
            queue_name: "q".into(),
        })
        .await
        .unwrap_err();
    assert_error(&status, Code::NotFound, 4440);

    create(&mut client, "q", attrs()).await;
    assert_eq!(stats(&mut client, "q").await.active_messages, 0);
    assert!(receive(&mut client, "q", 16).await.is_empty());
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn list_pages_in_name_order_with_prefix() {
    let server = TestServer::start().await;
    let mut client = server.client().await;
    for name in ["b-2", "a-1", "b-1", "b-3", "c-1"] {
        create(&mut client, name, attrs()).await;
    }
    let mut names = Vec::new();
    let mut token = String::new();
    loop {
        let page = client
            .list_queues(pb::ListQueuesRequest {
                prefix: "b-".into(),
                page_size: 2,
                page_token: token.clone(),
            })
            .await
            .expect("list")
            .into_inner();
        assert_eq!(page.total_count, 3);
        names.extend(page.queues.iter().map(|q| q.name.clone()));
        assert!(page.queues.iter().all(|q| q.stats.is_some()));
        if page.next_page_token.is_empty() {
            break;
        }
        token = page.next_page_token;
    }
    assert_eq!(names, ["b-1", "b-2", "b-3"]);

    let all = client
        .list_queues(pb::ListQueuesRequest::default())
        .await
        .expect("list")
        .into_inner();
    assert_eq!(all.total_count, 5);
    assert_eq!(all.queues.len(), 5);
    assert!(all.next_page_token.is_empty());

    for bad in [
        pb::ListQueuesRequest {
            page_size: 1_001,
            ..Default::default()
        },
        pb::ListQueuesRequest {
            page_token: "!!".into(),
            ..Default::default()
        },
    ] {
        let status = client.list_queues(bad).await.unwrap_err();
        assert_error(&status, Code::InvalidArgument, 4000);
    }
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_queues_is_enforced() {
    let server = TestServer::start_with(|config| config.settings.max_queues = Some(2)).await;
    let mut client = server.client().await;
    create(&mut client, "a", attrs()).await;
    create(&mut client, "b", attrs()).await;
    // Re-creating an existing queue is not a new queue.
    create(&mut client, "a", attrs()).await;
    let status = client
        .create_queue(pb::CreateQueueRequest {
            queue_name: "c".into(),
            attributes: None,
        })
        .await
        .unwrap_err();
    let message = assert_error(&status, Code::ResourceExhausted, 4450);
    assert!(message.contains("max_queues"), "{message}");
    client
        .delete_queue(pb::DeleteQueueRequest {
            queue_name: "a".into(),
        })
        .await
        .expect("delete");
    create(&mut client, "c", attrs()).await;
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_and_reflection_are_served() {
    use tonic_health::pb::health_check_response::ServingStatus;
    use tonic_health::pb::health_client::HealthClient;

    let server = TestServer::start().await;
    let channel = tonic::transport::Channel::from_shared(server.endpoint())
        .expect("endpoint")
        .connect()
        .await
        .expect("connect");
    let mut health = HealthClient::new(channel.clone());
    for service in ["", "spool.v1.QueueService"] {
        let response = health
            .check(tonic_health::pb::HealthCheckRequest {
                service: service.into(),
            })
            .await
            .expect("health check")
            .into_inner();
        assert_eq!(response.status(), ServingStatus::Serving, "{service:?}");
    }

    // Both reflection versions list the API.
    use tonic_reflection::pb::v1::server_reflection_client::ServerReflectionClient as V1;
    use tonic_reflection::pb::v1::server_reflection_request::MessageRequest as V1Request;
    use tonic_reflection::pb::v1::server_reflection_response::MessageResponse as V1Response;
    use tonic_reflection::pb::v1alpha::server_reflection_client::ServerReflectionClient as V1Alpha;
    use tonic_reflection::pb::v1alpha::server_reflection_request::MessageRequest as V1AlphaRequest;
    use tonic_reflection::pb::v1alpha::server_reflection_response::MessageResponse as V1AlphaResponse;

    let request = tonic_reflection::pb::v1::ServerReflectionRequest {
        host: String::new(),
        message_request: Some(V1Request::ListServices(String::new())),
    };
    let mut responses = V1::new(channel.clone())
        .server_reflection_info(tokio_stream::iter(vec![request]))
        .await
        .expect("reflection v1")
        .into_inner();
    let response = responses
        .message()
        .await
        .expect("v1 response")
        .expect("one");
    let Some(V1Response::ListServicesResponse(list)) = response.message_response else {
        panic!("unexpected v1 response");
    };
    assert!(
        list.service
            .iter()
            .any(|s| s.name == "spool.v1.QueueService")
    );

    let request = tonic_reflection::pb::v1alpha::ServerReflectionRequest {
        host: String::new(),
        message_request: Some(V1AlphaRequest::FileContainingSymbol(
            "google.rpc.ErrorInfo".into(),
        )),
    };
    let mut responses = V1Alpha::new(channel)
        .server_reflection_info(tokio_stream::iter(vec![request]))
        .await
        .expect("reflection v1alpha")
        .into_inner();
    let response = responses
        .message()
        .await
        .expect("v1alpha response")
        .expect("one");
    assert!(
        matches!(
            response.message_response,
            Some(V1AlphaResponse::FileDescriptorResponse(_))
        ),
        "error details' descriptors are registered"
    );
    server.stop().await;
}

/// A caller that goes away in the middle of a create or delete (here, deadlines about as long
/// as a commit) never leaves a queue or topic stored but not served: a call cut off goes on to
/// its end on the server or does nothing, so afterwards each queue either exists and takes
/// messages or can be created, and each topic can be created (again).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn creates_and_deletes_cut_off_by_their_deadline_are_done_whole_or_not_at_all() {
    let server = TestServer::start().await;
    let mut client = server.client().await;
    let cut_short = |index: u64| std::time::Duration::from_micros(100 + 150 * (index % 20));
    let mut failed = 0;
    for index in 0..40u64 {
        let name = format!("cut-{index}");
        let mut request = tonic::Request::new(pb::CreateQueueRequest {
            queue_name: name.clone(),
            attributes: None,
        });
        request.set_timeout(cut_short(index));
        failed += u32::from(client.create_queue(request).await.is_err());
        if index % 2 == 0 {
            let mut request = tonic::Request::new(pb::DeleteQueueRequest {
                queue_name: name.clone(),
            });
            request.set_timeout(cut_short(index + 7));
            failed += u32::from(client.delete_queue(request).await.is_err());
        }
        let mut request = tonic::Request::new(pb::CreateTopicRequest {
            topic_name: format!("cut-topic-{index}"),
            attributes: None,
        });
        request.set_timeout(cut_short(index + 3));
        failed += u32::from(client.create_topic(request).await.is_err());
    }
    // The calls cut off go on to their end on the server: a moment for the last of them.
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    for index in 0..40u64 {
        let name = format!("cut-{index}");
        let exists = client
            .get_queue(pb::GetQueueRequest {
                queue_name: name.clone(),
            })
            .await;
        match exists {
            Ok(_) => {}
            Err(status) if status.code() == Code::NotFound => {
                create(&mut client, &name, attrs()).await;
            }
            Err(status) => panic!("get {name}: {status:?}"),
        }
        send(&mut client, &name, b"after the calls cut short").await;
        let topic = format!("cut-topic-{index}");
        client
            .create_topic(pb::CreateTopicRequest {
                topic_name: topic.clone(),
                attributes: None,
            })
            .await
            .unwrap_or_else(|status| panic!("create topic {topic} (again): {status:?}"));
    }
    // Not an assertion on timing: how many calls the deadlines cut off only shows the test
    // exercised something.
    eprintln!("{failed} of 100 calls were cut off by their deadline");
}
