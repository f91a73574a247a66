//! The access-control layer in front of every RPC: authenticates the
//! bearer key, checks the role the RPC needs (before any handler runs, so
//! before anything is looked up), hands the caller to the handler, and
//! writes audit events for changes.

use std::{
    pin::Pin,
    sync::{Arc, Mutex},
    task::{Context, Poll},
    time::{Duration, Instant},
};

use tonic::{Code, Request, Status};
use tower::{Layer, Service};

use crate::{
    Error,
    domain::access::{Need, allows},
    grpc::policy::{is_audited, need_for},
    service::access::{AccessControl, Principal, Refusal},
};

#[derive(Clone)]
pub struct AuthLayer {
    access: Arc<AccessControl>,
    refusals: Arc<Mutex<RateLimit>>,
}

impl AuthLayer {
    pub fn new(access: Arc<AccessControl>) -> Self {
        Self {
            access,
            refusals: Arc::new(Mutex::new(RateLimit::new(MAX_REFUSAL_EVENTS_PER_SECOND))),
        }
    }
}

impl<S> Layer<S> for AuthLayer {
    type Service = Auth<S>;

    fn layer(&self, inner: S) -> Self::Service {
        Auth {
            inner,
            access: self.access.clone(),
            refusals: self.refusals.clone(),
        }
    }
}

#[derive(Clone)]
pub struct Auth<S> {
    inner: S,
    access: Arc<AccessControl>,
    refusals: Arc<Mutex<RateLimit>>,
}

/// At most this many audit events of refused authentications per second;
/// the next event after a burst says how many were left out.
pub const MAX_REFUSAL_EVENTS_PER_SECOND: u32 = 10;

/// A one-second window counting events, so that a flood of bad keys
/// cannot flood the log.
#[derive(Debug)]
pub struct RateLimit {
    per_second: u32,
    window: Instant,
    logged: u32,
    suppressed: u64,
}

impl RateLimit {
    pub fn new(per_second: u32) -> Self {
        Self {
            per_second,
            window: Instant::now(),
            logged: 0,
            suppressed: 0,
        }
    }

    /// Whether to log an event at `now`; with it, how many were left out
    /// since the last logged one.
    pub fn admit(&mut self, now: Instant) -> Option<u64> {
        if now.duration_since(self.window) >= Duration::from_secs(1) {
            self.window = now;
            self.logged = 0;
        }
        if self.logged < self.per_second {
            self.logged += 1;
            Some(std::mem::take(&mut self.suppressed))
        } else {
            self.suppressed += 1;
            None
        }
    }
}

type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send + 'static>>;

fn bearer(headers: &http::HeaderMap) -> Option<&str> {
    let value = headers.get(http::header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
}

fn audit(key_id: &str, method: &str, code: Code) {
    tracing::info!(target: "audit", key_id, method, outcome = ?code, "audit");
}

impl<S, ReqBody, ResBody> Service<http::Request<ReqBody>> for Auth<S>
where
    S: Service<http::Request<ReqBody>, Response = http::Response<ResBody>>,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
    ResBody: Default + Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = BoxFuture<Result<Self::Response, Self::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: http::Request<ReqBody>) -> Self::Future {
        let path = req.uri().path().to_owned();
        let need = need_for(&path);
        if need == Need::Open {
            return Box::pin(self.inner.call(req));
        }
        let refuse = |err: Error| -> Self::Future {
            let response = Status::from(err).into_http::<ResBody>();
            Box::pin(std::future::ready(Ok(response)))
        };
        let principal = match self.access.authenticate(bearer(req.headers())) {
            Ok(principal) => principal,
            Err(refusal) => {
                let why = match refusal {
                    Refusal::Missing => "no API key: send `authorization: Bearer <key>`",
                    Refusal::Malformed => {
                        "the authorization header does not hold a kpi-service API key"
                    }
                    Refusal::Unknown => "unknown or revoked API key",
                };
                if is_audited(&path) {
                    let admitted = self
                        .refusals
                        .lock()
                        .ok()
                        .and_then(|mut limit| limit.admit(Instant::now()));
                    if let Some(suppressed) = admitted {
                        tracing::warn!(
                            target: "audit",
                            method = %path,
                            outcome = ?Code::Unauthenticated,
                            refusal = ?refusal,
                            suppressed_since_last = suppressed,
                            "audit: authentication refused"
                        );
                    }
                }
                return refuse(Error::Unauthenticated(why.to_owned()));
            }
        };
        if !allows(principal.role, need) {
            if is_audited(&path) {
                audit(&principal.key_id, &path, Code::PermissionDenied);
            }
            return refuse(Error::PermissionDenied(format!(
                "a {} key may not call {path}",
                principal.role
            )));
        }
        let audited = is_audited(&path).then(|| principal.key_id.clone());
        req.extensions_mut().insert(principal);
        let future = self.inner.call(req);
        Box::pin(async move {
            let result = future.await;
            if let Some(key_id) = audited {
                let code = match &result {
                    Ok(response) => response
                        .headers()
                        .get("grpc-status")
                        .and_then(|v| v.to_str().ok())
                        .and_then(|v| v.parse::<i32>().ok())
                        .map_or(Code::Ok, Code::from_i32),
                    Err(_) => Code::Unknown,
                };
                audit(&key_id, &path, code);
            }
            result
        })
    }
}

/// The caller of an RPC, as the layer authenticated it.
pub fn principal<T>(request: &Request<T>) -> Result<Principal, Error> {
    request
        .extensions()
        .get::<Principal>()
        .cloned()
        .ok_or_else(|| Error::Unauthenticated("no API key".to_owned()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refusal_events_are_limited_per_second_and_say_how_many_were_left_out() {
        let start = Instant::now();
        let mut limit = RateLimit::new(3);
        let burst: Vec<_> = (0..5).map(|_| limit.admit(start)).collect();
        assert_eq!(burst, [Some(0), Some(0), Some(0), None, None]);
        let later = start + Duration::from_millis(1001);
        assert_eq!(limit.admit(later), Some(2));
        assert_eq!(limit.admit(later), Some(0));
    }
}
