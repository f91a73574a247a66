//! Watched answers: an answer computed again whenever the change feed says
//! something it read changed (or its relative period moved on), sent only
//! when it differs from the last one sent.
//!
//! One task per watch, holding little while idle: the fingerprint of the
//! last answer sent, the scopes it read and a feed subscription. Changes
//! are coalesced: while a computation is due, more changes only keep it
//! due, and an answer is computed only when the caller's channel is empty,
//! so a slow reader gets the latest state, never a queue of old ones.

use std::{future::Future, pin::Pin, sync::Arc, time::Duration};

use chrono::Utc;
use tokio::{
    sync::{OwnedSemaphorePermit, Semaphore, mpsc},
    time::Instant,
};

use super::feed::{Feed, Subscription};
use crate::{
    Error,
    domain::period::{Period, PeriodSpec},
};

/// Least time between two messages when the caller names none.
pub const DEFAULT_MIN_INTERVAL: Duration = Duration::from_secs(1);
/// The longest minimum interval a caller may ask for.
pub const MAX_MIN_INTERVAL: Duration = Duration::from_secs(3600);
/// How long after local midnight a relative period is resolved again (the
/// clocks of the timer and of the calendar are not the same clock).
const ROLLOVER_MARGIN: Duration = Duration::from_millis(50);
/// A timer that does not fire (fixed dates never roll over).
const NEVER: Duration = Duration::from_secs(365 * 86_400);

/// Why a message was sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reason {
    Initial,
    Changed,
    PeriodRolledOver,
}

/// One computation of a watched answer, in the transport's form.
#[derive(Debug)]
pub struct Answer<T> {
    pub message: T,
    /// Equal for answers that show the same values (fields that move with
    /// the clock alone, such as a target's pace, left out).
    pub fingerprint: u64,
    /// What it read (see `store::changes`): a change to any of them may
    /// change it.
    pub scopes: Arc<[String]>,
    /// The dates it is for.
    pub period: Period,
}

/// One message of a watch.
#[derive(Debug)]
pub struct Update<T> {
    pub message: T,
    pub reason: Reason,
}

/// A computation of the answer, boxed so an idle watch holds only its
/// state, not the largest future it may run.
pub type Compute<T> = Pin<Box<dyn Future<Output = Result<Answer<T>, Error>> + Send>>;

/// The watches of this process: their bound and the feed they follow.
#[derive(Debug, Clone)]
pub struct Watches {
    feed: Feed,
    slots: Arc<Semaphore>,
    max: usize,
}

/// A watch's place among the process's `max` watches.
#[derive(Debug)]
pub struct Slot(#[allow(dead_code)] OwnedSemaphorePermit);

impl Watches {
    pub fn new(feed: Feed, max: usize) -> Self {
        Self {
            feed,
            slots: Arc::new(Semaphore::new(max)),
            max,
        }
    }

    pub fn feed(&self) -> &Feed {
        &self.feed
    }

    /// Watches open now.
    pub fn open(&self) -> usize {
        self.max - self.slots.available_permits()
    }

    /// A place for one more watch, or RESOURCE_EXHAUSTED at once.
    pub fn slot(&self) -> Result<Slot, Error> {
        self.slots
            .clone()
            .try_acquire_owned()
            .map(Slot)
            .map_err(|_| Error::Busy {
                reason: "TOO_MANY_WATCHES",
                message: format!(
                    "{} watches are open, the most this instance allows (--max-watches); \
                     retry later or on another instance",
                    self.max
                ),
            })
    }

    /// Starts a watch: takes a place (or RESOURCE_EXHAUSTED at once),
    /// computes the first answer (its error is the call's), then follows
    /// the feed in a task of its own until the caller goes away, `ended`
    /// resolves (its error is the last message) or a computation fails
    /// (likewise). The receiver holds at most the latest answer and the
    /// closing error.
    pub async fn start<T: Send + 'static>(
        &self,
        spec: PeriodSpec,
        min_interval: Duration,
        mut compute: impl FnMut() -> Compute<T> + Send + 'static,
        ended: impl Future<Output = Error> + Send + 'static,
    ) -> Result<mpsc::Receiver<Result<Update<T>, Error>>, Error> {
        let slot = self.slot()?;
        // Subscribed before the first computation: whatever commits after
        // it read is heard.
        let feed = self.feed.subscribe();
        let first = compute().await?;
        // An answer is computed only when the channel is empty (see
        // `follow`), so the closing error always finds room.
        let (tx, rx) = mpsc::channel(2);
        let state = State {
            last: (first.fingerprint, first.period),
            scopes: first.scopes,
            not_before: Instant::now() + min_interval,
        };
        let _ = tx.try_send(Ok(Update {
            message: first.message,
            reason: Reason::Initial,
        }));
        tokio::spawn(follow(
            slot,
            feed,
            spec,
            min_interval,
            state,
            compute,
            tx,
            ended,
        ));
        Ok(rx)
    }
}

/// What a watch remembers between messages.
struct State {
    /// The fingerprint and dates of the last answer sent.
    last: (u64, Period),
    /// What the last answer computed read.
    scopes: Arc<[String]>,
    /// No message before this.
    not_before: Instant,
}

/// A watch's task.
#[allow(clippy::too_many_arguments)]
async fn follow<T: Send + 'static>(
    _slot: Slot,
    mut feed: Subscription,
    spec: PeriodSpec,
    min_interval: Duration,
    mut state: State,
    mut compute: impl FnMut() -> Compute<T> + Send,
    sink: mpsc::Sender<Result<Update<T>, Error>>,
    ended: impl Future<Output = Error> + Send,
) {
    tokio::pin!(ended);
    // One timer for the next local midnight, reset when it fires: not
    // worked out again for every notification the watch hears.
    let rollover_at = || {
        let now = Utc::now();
        spec.next_change(now)
            .and_then(|at| (at - now).to_std().ok())
            .map(|wait| Instant::now() + wait + ROLLOVER_MARGIN)
    };
    let rolls = spec.is_relative();
    let timer = tokio::time::sleep_until(rollover_at().unwrap_or_else(|| Instant::now() + NEVER));
    tokio::pin!(timer);
    let mut due = false;
    loop {
        tokio::select! {
            biased;
            cause = &mut ended => {
                let _ = sink.try_send(Err(cause));
                return;
            }
            () = sink.closed() => return,
            event = feed.next() => {
                due = due || event.touches(&state.scopes);
            }
            () = &mut timer, if rolls && !due => {
                due = true;
                let next = rollover_at().unwrap_or_else(|| Instant::now() + NEVER);
                timer.as_mut().reset(next);
            }
            permits = async {
                tokio::time::sleep_until(state.not_before).await;
                sink.reserve_many(2).await
            }, if due => {
                let Ok(mut permits) = permits else { return };
                due = false;
                let answer = match compute().await {
                    Ok(answer) => answer,
                    Err(err) => {
                        if let Some(permit) = permits.next() {
                            permit.send(Err(err));
                        }
                        return;
                    }
                };
                state.scopes = answer.scopes;
                let (fingerprint, period) = state.last;
                let reason = if period != answer.period {
                    Reason::PeriodRolledOver
                } else if fingerprint != answer.fingerprint {
                    Reason::Changed
                } else {
                    continue;
                };
                state.last = (answer.fingerprint, answer.period);
                if let Some(permit) = permits.next() {
                    permit.send(Ok(Update { message: answer.message, reason }));
                }
                state.not_before = Instant::now() + min_interval;
            }
        }
    }
}

/// A fingerprint of an encoded message.
pub fn fingerprint(bytes: &[u8]) -> u64 {
    use std::hash::{BuildHasher, BuildHasherDefault, DefaultHasher};
    BuildHasherDefault::<DefaultHasher>::default().hash_one(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{
        domain::period::{CalendarUnit, Relative},
        service::feed::Event,
        store::changes::{Change, rep_scope},
    };
    use chrono::NaiveDate;

    fn day(s: &str) -> NaiveDate {
        NaiveDate::parse_from_str(s, "%Y-%m-%d").unwrap_or_default()
    }

    /// A watch over a counter: each computation reads `value` and reports
    /// scope rep:anna.
    fn counter(
        value: Arc<std::sync::atomic::AtomicU64>,
        computed: Arc<std::sync::atomic::AtomicU64>,
    ) -> impl FnMut() -> Compute<u64> + Send {
        move || {
            let value = value.clone();
            let computed = computed.clone();
            Box::pin(async move {
                use std::sync::atomic::Ordering::SeqCst;
                computed.fetch_add(1, SeqCst);
                let v = value.load(SeqCst);
                Ok(Answer {
                    message: v,
                    fingerprint: v,
                    scopes: Arc::from(vec![rep_scope("anna")]),
                    period: Period::new(day("2026-01-01"), day("2026-01-31"), chrono_tz::UTC)
                        .map_err(|e| Error::internal(anyhow::anyhow!(e)))?,
                })
            })
        }
    }

    #[tokio::test]
    async fn sends_the_answer_then_only_changes_and_ends_with_the_cause() {
        use std::sync::atomic::{AtomicU64, Ordering::SeqCst};
        let watches = Watches::new(Feed::default(), 1);
        let value = Arc::new(AtomicU64::new(7));
        let computed = Arc::new(AtomicU64::new(0));
        let (end_tx, end_rx) = tokio::sync::oneshot::channel::<()>();
        let spec = PeriodSpec::Fixed(
            Period::new(day("2026-01-01"), day("2026-01-31"), chrono_tz::UTC)
                .map_err(|e| e.to_string())
                .unwrap_or_else(|e| panic!("{e}")),
        );
        let started = watches
            .start(
                spec,
                Duration::ZERO,
                counter(value.clone(), computed.clone()),
                async {
                    let _ = end_rx.await;
                    Error::ShuttingDown
                },
            )
            .await;
        let Ok(mut rx) = started else {
            panic!("not started: {:?}", started.err());
        };
        // The second watch finds no place.
        let refused = watches
            .start(
                spec,
                Duration::ZERO,
                counter(value.clone(), computed.clone()),
                async { Error::ShuttingDown },
            )
            .await;
        assert!(matches!(
            refused,
            Err(Error::Busy {
                reason: "TOO_MANY_WATCHES",
                ..
            })
        ));
        let first = rx.recv().await.map(|u| u.map(|u| (u.message, u.reason)));
        assert!(matches!(first, Some(Ok((7, Reason::Initial)))), "{first:?}");

        let feed = watches.feed().clone();
        let change = |rep: &str| Event::Changed(Arc::new(Change::new(vec![rep_scope(rep)], None)));
        // A change elsewhere computes nothing.
        feed.send(change("bob"));
        // A change to its scope that leaves the value alone: computed, not sent.
        feed.send(change("anna"));
        // Then one that changes it.
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert_eq!(computed.load(SeqCst), 2);
        value.store(8, SeqCst);
        feed.send(change("anna"));
        let next = rx.recv().await.map(|u| u.map(|u| (u.message, u.reason)));
        assert!(matches!(next, Some(Ok((8, Reason::Changed)))), "{next:?}");
        assert_eq!(computed.load(SeqCst), 3);

        // Many changes while the reader does not read: one computation per
        // free channel, and it ends up with the latest value.
        for v in 9..=20 {
            value.store(v, SeqCst);
            feed.send(change("anna"));
            tokio::task::yield_now().await;
        }
        feed.send(Event::Resync);
        tokio::time::sleep(Duration::from_millis(50)).await;
        let mut latest = 0;
        while let Ok(Ok(update)) = rx.try_recv() {
            latest = update.message;
        }
        if latest != 20 {
            let next = rx.recv().await.and_then(Result::ok).map(|u| u.message);
            assert_eq!(next, Some(20));
        }
        assert!(computed.load(SeqCst) < 16, "{}", computed.load(SeqCst));

        let _ = end_tx.send(());
        let last = rx.recv().await;
        assert!(matches!(last, Some(Err(Error::ShuttingDown))), "{last:?}");
        assert!(rx.recv().await.is_none());
        assert_eq!(watches.open(), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn a_relative_period_is_resolved_again_at_local_midnight_and_says_so() {
        use std::sync::atomic::{AtomicU64, Ordering::SeqCst};
        let watches = Watches::new(Feed::default(), 1);
        let spec = PeriodSpec::Relative {
            relative: Relative::Current(CalendarUnit::Day),
            zone: chrono_tz::Pacific::Auckland,
        };
        // Each computation resolves the spec as the service does; the
        // second is "after midnight": the next day.
        let computed = Arc::new(AtomicU64::new(0));
        let compute = {
            let computed = computed.clone();
            move || -> Compute<u64> {
                let n = computed.fetch_add(1, SeqCst);
                Box::pin(async move {
                    let now = Utc::now() + chrono::TimeDelta::days(i64::try_from(n).unwrap_or(0));
                    Ok(Answer {
                        message: n,
                        fingerprint: 7,
                        scopes: Arc::from(Vec::new()),
                        period: spec.resolve(now, 1),
                    })
                })
            }
        };
        let started = watches
            .start(spec, Duration::ZERO, compute, std::future::pending())
            .await;
        let Ok(mut rx) = started else {
            panic!("not started: {:?}", started.err());
        };
        let first = rx.recv().await.and_then(Result::ok).map(|u| u.reason);
        assert_eq!(first, Some(Reason::Initial));
        let began = Instant::now();
        let until_midnight = spec
            .next_change(Utc::now())
            .and_then(|at| (at - Utc::now()).to_std().ok())
            .unwrap_or_default();
        // Nothing changes but the clock: at local midnight (the paused
        // clock jumps there) the period is resolved again, and the same
        // values for other dates are a message.
        let next = rx
            .recv()
            .await
            .and_then(Result::ok)
            .map(|u| (u.message, u.reason));
        assert_eq!(next, Some((1, Reason::PeriodRolledOver)));
        assert_eq!(computed.load(SeqCst), 2);
        // Not before midnight (the paused clock moved there, not further
        // than the margin).
        let waited = began.elapsed();
        assert!(
            waited + Duration::from_secs(1) >= until_midnight
                && waited <= until_midnight + ROLLOVER_MARGIN + Duration::from_secs(1),
            "rolled over after {waited:?}, midnight was {until_midnight:?} away"
        );
    }

    #[test]
    fn relative_periods_change_at_local_midnight() {
        let spec = PeriodSpec::Relative {
            relative: Relative::Current(CalendarUnit::Month),
            zone: chrono_tz::America::New_York,
        };
        let now = chrono::DateTime::parse_from_rfc3339("2026-03-31T23:30:00-04:00")
            .map(|t| t.to_utc())
            .unwrap_or_default();
        let next = spec.next_change(now);
        assert_eq!(
            next.map(|t| t.to_rfc3339()),
            Some("2026-04-01T04:00:00+00:00".to_owned())
        );
        let fixed = PeriodSpec::Fixed(spec.resolve(now, 1));
        assert_eq!(fixed.next_change(now), None);
    }
}
