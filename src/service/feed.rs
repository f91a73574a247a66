//! The read side of the change feed: one `LISTEN kpi_changes` connection
//! per process, fanned out to every watch in it.
//!
//! Every transaction that changes KPI inputs NOTIFYs at its commit (see
//! `store::changes`), whichever replica took it. PostgreSQL delivers a
//! notification to every listening connection, but only while it listens:
//! when the connection is lost, what committed before the new `LISTEN` is
//! never delivered. So after every reconnection the feed sends `Resync`
//! ("anything may have changed"), and every watch recomputes once. A
//! subscriber that falls so far behind that the channel dropped events for
//! it gets a `Resync` too. No change is ever missed, only coalesced.

use std::{sync::Arc, time::Duration};

use sqlx::{PgPool, postgres::PgListener};
use tokio::sync::{broadcast, watch};

use crate::store::changes::{self, Change};

/// Events a subscriber may lag behind before it resynchronises instead.
const CAPACITY: usize = 4096;
/// The longest wait between two attempts to listen again.
const MAX_BACKOFF: Duration = Duration::from_secs(5);

/// What a subscriber learns.
#[derive(Debug, Clone)]
pub enum Event {
    /// One committed transaction's change.
    Changed(Arc<Change>),
    /// Notifications may have been missed: treat everything as changed.
    Resync,
}

impl Event {
    /// Whether an answer that read `scopes` may be affected.
    pub fn touches(&self, scopes: &[String]) -> bool {
        match self {
            Self::Changed(change) => change.touches(scopes),
            Self::Resync => true,
        }
    }
}

/// The process's feed: cheap to clone, one listener behind all clones.
#[derive(Debug, Clone)]
pub struct Feed {
    tx: broadcast::Sender<Event>,
}

impl Default for Feed {
    fn default() -> Self {
        Self {
            tx: broadcast::channel(CAPACITY).0,
        }
    }
}

/// One subscriber's view of the feed.
#[derive(Debug)]
pub struct Subscription {
    rx: broadcast::Receiver<Event>,
}

impl Subscription {
    /// The next event; `Resync` when this subscriber lagged. Never
    /// resolves once the feed is gone (the process is stopping).
    pub async fn next(&mut self) -> Event {
        match self.rx.recv().await {
            Ok(event) => event,
            Err(broadcast::error::RecvError::Lagged(_)) => {
                crate::observe::metrics::change_feed("lagged");
                Event::Resync
            }
            Err(broadcast::error::RecvError::Closed) => std::future::pending().await,
        }
    }
}

impl Feed {
    /// Events from now on (subscribe *before* computing what they may
    /// invalidate, so nothing committed in between goes unheard).
    pub fn subscribe(&self) -> Subscription {
        Subscription {
            rx: self.tx.subscribe(),
        }
    }

    /// Subscribers now.
    pub fn subscribers(&self) -> usize {
        self.tx.receiver_count()
    }

    /// Publishes an event to this process's subscribers (the listener does;
    /// tests may).
    pub fn send(&self, event: Event) {
        // No subscriber is not an error.
        let _ = self.tx.send(event);
    }

    /// Listens on the database until `stop`, reconnecting with backoff and
    /// sending `Resync` after each reconnection.
    pub async fn listen_until(self, pool: PgPool, mut stop: watch::Receiver<bool>) {
        let mut backoff = Duration::from_millis(100);
        let mut first = true;
        loop {
            let listener = tokio::select! {
                listener = listen(&pool) => listener,
                _ = stop.wait_for(|stop| *stop) => return,
            };
            let mut listener = match listener {
                Ok(listener) => listener,
                Err(err) => {
                    tracing::warn!(error = %err, retry_in = ?backoff, "cannot listen for KPI changes");
                    tokio::select! {
                        () = tokio::time::sleep(backoff) => {}
                        _ = stop.wait_for(|stop| *stop) => return,
                    }
                    backoff = (backoff * 2).min(MAX_BACKOFF);
                    continue;
                }
            };
            // Watches that began before this LISTEN may have missed what
            // committed since they computed.
            if !first {
                crate::observe::metrics::change_feed("reconnected");
                tracing::info!("listening for KPI changes again; every watch recomputes once");
            }
            self.send(Event::Resync);
            first = false;
            backoff = Duration::from_millis(100);
            loop {
                let received = tokio::select! {
                    received = listener.try_recv() => received,
                    _ = stop.wait_for(|stop| *stop) => return,
                };
                match received {
                    Ok(Some(notification)) => {
                        let event = match Change::parse_noted(notification.payload()) {
                            Some((change, noted)) => {
                                crate::observe::metrics::change_feed("change");
                                if let Some(noted) = noted {
                                    let lag =
                                        (chrono::Utc::now() - noted).to_std().unwrap_or_default();
                                    crate::observe::metrics::change_feed_lag(lag);
                                }
                                Event::Changed(Arc::new(change))
                            }
                            None => {
                                crate::observe::metrics::change_feed("unparsed");
                                Event::Resync
                            }
                        };
                        self.send(event);
                    }
                    // The connection was lost and (eager reconnection) is
                    // listening again: what committed in between is unheard.
                    Ok(None) => {
                        crate::observe::metrics::change_feed("reconnected");
                        tracing::warn!(
                            "the KPI change listener lost its connection and reconnected; every watch recomputes once"
                        );
                        self.send(Event::Resync);
                    }
                    Err(err) => {
                        tracing::warn!(error = %err, "the KPI change listener failed; listening again");
                        break;
                    }
                }
            }
        }
    }
}

async fn listen(pool: &PgPool) -> Result<PgListener, sqlx::Error> {
    let mut listener = PgListener::connect_with(pool).await?;
    listener.listen(changes::CHANNEL).await?;
    Ok(listener)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_subscriber_that_lags_resynchronises() {
        let feed = Feed::default();
        let mut slow = feed.subscribe();
        let change = Arc::new(Change::new(vec![changes::rep_scope("anna")], None));
        for _ in 0..CAPACITY + 1 {
            feed.send(Event::Changed(change.clone()));
        }
        assert!(matches!(slow.next().await, Event::Resync));
        // Then the events still held, in order.
        assert!(matches!(slow.next().await, Event::Changed(_)));
        let scopes = [changes::rep_scope("bob")];
        assert!(!Event::Changed(change).touches(&scopes));
        assert!(Event::Resync.touches(&scopes));
    }
}
