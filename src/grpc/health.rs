//! `grpc.health.v1.Health`, Check and Watch, over `tonic_health::pb`'s types.
//!
//! Spool's own rather than tonic-health's server, because that one fails a Watch of a service it
//! does not know with NOT_FOUND; the health protocol says a Watch streams SERVICE_UNKNOWN and
//! stays open, then streams the service's status if it appears (a client may watch readiness
//! before the server has registered it). Check of an unknown service is NOT_FOUND, as the
//! protocol says.
//!
//! Memory: every status lives in one `watch` channel holding the whole (small) map; a Watch call
//! holds a receiver and its service name, never a queue of updates. A watcher that falls behind
//! skips to the newest status, which is all the protocol promises.

use std::collections::BTreeMap;
use std::pin::Pin;

use futures_util::Stream;
use tokio::sync::watch;
use tonic::server::NamedService;
use tonic::{Request, Response, Status};
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_server::{Health, HealthServer};
use tonic_health::pb::{HealthCheckRequest, HealthCheckResponse};

/// A health request is a service name; nothing legitimate comes near this, and a bound keeps
/// the name every open Watch holds small.
const MAX_HEALTH_REQUEST_BYTES: usize = 4 * 1024;

/// Status per service name; "" is the server as a whole (liveness).
type Statuses = BTreeMap<String, ServingStatus>;

/// Sets the statuses that Check and Watch report. Watches end once every reporter is dropped
/// (the server is stopping), after they have sent the last status.
#[derive(Debug, Clone)]
pub struct HealthReporter {
    statuses: watch::Sender<Statuses>,
}

impl HealthReporter {
    /// Sets a service's status; watchers of that service hear of it only if it changed.
    pub fn set(&self, service: &str, status: ServingStatus) {
        self.statuses.send_if_modified(|statuses| {
            statuses.insert(service.to_string(), status) != Some(status)
        });
    }

    pub fn set_serving<S: NamedService>(&self) {
        self.set(S::NAME, ServingStatus::Serving);
    }

    pub fn set_not_serving<S: NamedService>(&self) {
        self.set(S::NAME, ServingStatus::NotServing);
    }
}

/// The health service and the reporter that drives it; "" starts SERVING.
pub fn health_service() -> (HealthReporter, HealthServer<HealthService>) {
    let (statuses, receiver) =
        watch::channel(Statuses::from([(String::new(), ServingStatus::Serving)]));
    let server = HealthServer::new(HealthService { statuses: receiver })
        .max_decoding_message_size(MAX_HEALTH_REQUEST_BYTES);
    (HealthReporter { statuses }, server)
}

#[derive(Debug)]
pub struct HealthService {
    statuses: watch::Receiver<Statuses>,
}

fn answer(status: ServingStatus) -> HealthCheckResponse {
    HealthCheckResponse {
        status: status.into(),
    }
}

/// What a Watch of `service` reports: its status, or SERVICE_UNKNOWN while it has none.
fn status_of(statuses: &Statuses, service: &str) -> ServingStatus {
    statuses
        .get(service)
        .copied()
        .unwrap_or(ServingStatus::ServiceUnknown)
}

pub type WatchStream = Pin<Box<dyn Stream<Item = Result<HealthCheckResponse, Status>> + Send>>;

#[tonic::async_trait]
impl Health for HealthService {
    async fn check(
        &self,
        request: Request<HealthCheckRequest>,
    ) -> Result<Response<HealthCheckResponse>, Status> {
        let service = request.into_inner().service;
        let status = self.statuses.borrow().get(&service).copied();
        match status {
            Some(status) => Ok(Response::new(answer(status))),
            None => Err(Status::not_found(format!(
                "no health status for service {service:?}"
            ))),
        }
    }

    type WatchStream = WatchStream;

    async fn watch(
        &self,
        request: Request<HealthCheckRequest>,
    ) -> Result<Response<Self::WatchStream>, Status> {
        let service = request.into_inner().service;
        let state = (self.statuses.clone(), service, None);
        let updates =
            futures_util::stream::unfold(state, |(mut statuses, service, sent)| async move {
                loop {
                    let current = status_of(&statuses.borrow_and_update(), &service);
                    if sent != Some(current) {
                        return Some((Ok(answer(current)), (statuses, service, Some(current))));
                    }
                    // Another service changed, or this one was set to what it was: wait on. An
                    // error means every reporter is gone: the server is stopping.
                    statuses.changed().await.ok()?;
                }
            });
        Ok(Response::new(Box::pin(updates)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures_util::StreamExt as _;

    fn request(service: &str) -> Request<HealthCheckRequest> {
        Request::new(HealthCheckRequest {
            service: service.into(),
        })
    }

    async fn next(stream: &mut WatchStream) -> ServingStatus {
        let response = stream.next().await.expect("an update").expect("ok");
        response.status()
    }

    #[tokio::test]
    async fn an_unknown_service_is_watched_until_it_appears() {
        let (reporter, _server) = health_service();
        let service = HealthService {
            statuses: reporter.statuses.subscribe(),
        };
        let mut watch = service
            .watch(request("later"))
            .await
            .expect("watch")
            .into_inner();
        assert_eq!(next(&mut watch).await, ServingStatus::ServiceUnknown);
        // Changes of other services are not reported.
        reporter.set("other", ServingStatus::NotServing);
        reporter.set("later", ServingStatus::NotServing);
        assert_eq!(next(&mut watch).await, ServingStatus::NotServing);
        reporter.set("later", ServingStatus::NotServing);
        reporter.set("later", ServingStatus::Serving);
        assert_eq!(next(&mut watch).await, ServingStatus::Serving);
        let check = service.check(request("later")).await.expect("check");
        assert_eq!(check.into_inner().status(), ServingStatus::Serving);
        let unknown = service.check(request("nope")).await.expect_err("unknown");
        assert_eq!(unknown.code(), tonic::Code::NotFound);

        drop(reporter);
        assert!(
            watch.next().await.is_none(),
            "a stopped server ends watches"
        );
    }
}
