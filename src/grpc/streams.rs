//! The policy of open streams (`StreamActivities` and the watches): a
//! revoked or expired key ends them within a key refresh, a shutdown at
//! once, and one batch of a stream gets the call deadline.

use std::{sync::Arc, time::Duration};

use tokio::sync::watch;

use crate::{
    Error,
    service::access::{AccessControl, Principal},
};

/// What ends an open stream (`StreamActivities`, the watches) besides its
/// client.
#[derive(Clone)]
pub struct StreamLimits {
    /// The key cache: a stream re-checks its key on every change and
    /// before every batch.
    pub access: Arc<AccessControl>,
    /// Turns true on SIGTERM: streams take no new batch, finish the one in
    /// flight and end with SHUTTING_DOWN.
    pub shutdown: watch::Receiver<bool>,
    /// Longest one batch may take (the server's call deadline).
    pub batch_timeout: Duration,
}

impl StreamLimits {
    /// Why an open stream of `caller` must end now, if it must.
    pub fn interruption(&self, caller: &Principal) -> Option<Error> {
        if *self.shutdown.borrow() {
            Some(Error::ShuttingDown)
        } else if !self.access.still_valid(caller) {
            Some(Error::Unauthenticated(
                "the API key was revoked or expired while the stream was open".to_owned(),
            ))
        } else {
            None
        }
    }

    /// Resolves, with the reason, when an open stream of `caller` must end:
    /// at once on shutdown, within a key refresh of a revocation.
    pub async fn ended(&self, caller: &Principal) -> Error {
        let mut keys = self.access.changes();
        let mut shutdown = self.shutdown.clone();
        loop {
            if let Some(cause) = self.interruption(caller) {
                return cause;
            }
            tokio::select! {
                () = changed(&mut shutdown) => {}
                () = changed(&mut keys) => {}
            }
        }
    }
}

/// Resolves when `rx` changes; never, once its sender is gone.
pub async fn changed<T>(rx: &mut watch::Receiver<T>) {
    if rx.changed().await.is_err() {
        std::future::pending::<()>().await;
    }
}
