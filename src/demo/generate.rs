//! The generated organisation (regions, teams, pods, reps, a few moves)
//! and each rep's activity: deterministic for a seed.

use chrono::{DateTime, Datelike, TimeDelta, Utc, Weekday};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use super::push::chunks;
use super::records::{self, team, usd_cents};
use crate::config::DemoOptions;
use crate::proto::{pb, timestamp};

/// The teams: two regions, two teams each, two pods per team.
pub fn teams() -> Vec<pb::UpsertTeamRequest> {
    let mut teams = Vec::new();
    for region in ["amer", "emea"] {
        teams.push(team(region, &region.to_uppercase(), ""));
        for t in ["north", "south"] {
            let team_id = format!("{region}-{t}");
            teams.push(team(
                &team_id,
                &format!("{} {t}", region.to_uppercase()),
                region,
            ));
            for pod in ["1", "2"] {
                let pod_id = format!("{team_id}-pod{pod}");
                teams.push(team(
                    &pod_id,
                    &format!("{} {t} pod {pod}", region.to_uppercase()),
                    &team_id,
                ));
            }
        }
    }
    teams
}

const FIRST_NAMES: [&str; 16] = [
    "Anna", "Ben", "Chloe", "David", "Elif", "Farid", "Grace", "Hugo", "Ines", "Jonas", "Kenji",
    "Lena", "Marco", "Nadia", "Omar", "Priya",
];
const LAST_NAMES: [&str; 12] = [
    "Svensson",
    "Okafor",
    "Müller",
    "Rossi",
    "Tanaka",
    "Dubois",
    "García",
    "Nowak",
    "Silva",
    "Kowalski",
    "Haddad",
    "Lindqvist",
];

fn pods() -> Vec<String> {
    teams()
        .into_iter()
        .map(|t| t.team_id)
        .filter(|id| id.contains("pod"))
        .collect()
}

/// The reps, spread over the pods; each rep's first team applies from the
/// beginning of time.
pub fn reps(options: &DemoOptions) -> Vec<pb::UpsertRepRequest> {
    let pods = pods();
    (0..options.reps)
        .map(|i| {
            let first = FIRST_NAMES[i % FIRST_NAMES.len()];
            let last = LAST_NAMES[(i / FIRST_NAMES.len() + i) % LAST_NAMES.len()];
            let rep_id = format!("rep-{i:03}");
            pb::UpsertRepRequest {
                display_name: format!("{first} {last}"),
                email: format!("{}.{rep_id}@example.com", first.to_lowercase()),
                active: Some(true),
                team_id: pods[i % pods.len()].clone(),
                team_effective_time: None,
                rep_id,
            }
        })
        .collect()
}

/// Every seventh rep moves to the next pod halfway through the span, so
/// team numbers depend on when the activity happened.
pub fn moves(
    options: &DemoOptions,
    start: DateTime<Utc>,
    end: DateTime<Utc>,
) -> Vec<pb::UpsertRepRequest> {
    let pods = pods();
    let halfway = start + (end - start) / 2;
    reps(options)
        .into_iter()
        .enumerate()
        .filter(|(i, _)| i % 7 == 3)
        .map(|(i, mut rep)| {
            rep.team_id = pods[(i + 1) % pods.len()].clone();
            rep.team_effective_time = Some(timestamp(halfway));
            rep
        })
        .collect()
}

/// The span of activity: `days` days ending with the end date, and never
/// later than `now`.
pub fn span(options: &DemoOptions, now: DateTime<Utc>) -> (DateTime<Utc>, DateTime<Utc>) {
    let end_date = options.end_date.unwrap_or_else(|| now.date_naive());
    // Whole days, so the same seed gives the same records all day long.
    let midnight_after = end_date
        .succ_opt()
        .unwrap_or(end_date)
        .and_hms_opt(0, 0, 0)
        .map_or(now, |t| t.and_utc());
    let start = midnight_after - TimeDelta::days(i64::from(options.days));
    (start, midnight_after.min(now))
}

/// All records of one rep, deterministic for (seed, rep index, span).
pub fn rep_activity(
    options: &DemoOptions,
    rep_index: usize,
    start: DateTime<Utc>,
    end: DateTime<Utc>,
) -> Vec<pb::ActivityRecord> {
    let rep_id = format!("rep-{rep_index:03}");
    let mut rng = ChaCha8Rng::seed_from_u64(
        options
            .seed
            .wrapping_mul(0x9e37_79b9_7f4a_7c15)
            .wrapping_add(rep_index as u64),
    );
    // Some reps are simply better: more activity, better conversion.
    let skill: f64 = rng.random_range(0.6..1.4);
    // Working hours in UTC: AMER pods are afternoons, EMEA mornings.
    let day_start_hour = if pods()[rep_index % pods().len()].starts_with("amer") {
        13
    } else {
        7
    };
    let mut out = Vec::new();
    let mut seq = 0u32;
    let mut next_id = |kind: &str| {
        seq += 1;
        format!("{rep_id}-{kind}{seq:06}")
    };
    let clip = |at: DateTime<Utc>| (at < end).then_some(at);

    let days = (end - start).num_days();
    for day in 0..days {
        let date = start + TimeDelta::days(day);
        let weekend = matches!(date.weekday(), Weekday::Sat | Weekday::Sun);
        let volume = if weekend { 0.1 } else { 1.0 };
        let at = |rng: &mut ChaCha8Rng| {
            date + TimeDelta::hours(day_start_hour)
                + TimeDelta::seconds(rng.random_range(0..10 * 3600))
        };

        // Interactions.
        let mean = options.interactions_per_day * skill * volume;
        let count = (mean * rng.random_range(0.5..1.5)).round() as u32;
        for _ in 0..count {
            let occurred = at(&mut rng);
            if clip(occurred).is_none() {
                continue;
            }
            let roll: f64 = rng.random();
            let channel = match roll {
                r if r < 0.40 => pb::Channel::Call,
                r if r < 0.75 => pb::Channel::Email,
                r if r < 0.90 => pb::Channel::Meeting,
                r if r < 0.97 => pb::Channel::Message,
                _ => pb::Channel::Demo,
            };
            let duration = match channel {
                pb::Channel::Call => Some(rng.random_range(60..1800)),
                pb::Channel::Meeting | pb::Channel::Demo => Some(rng.random_range(900..3600)),
                _ => None,
            };
            let mut interaction = records::interaction(next_id("i"), &rep_id, channel, occurred);
            interaction.duration_seconds = duration;
            out.push(interaction.record());
        }

        // A new lead about every other working day.
        if weekend || !rng.random_bool(0.55) {
            continue;
        }
        let customer_id = next_id("c");
        let lead_at = at(&mut rng);
        let converts = rng.random_bool((0.12 + 0.18 * skill).min(0.9));
        let converted_at = converts
            .then(|| lead_at + TimeDelta::hours(rng.random_range(72..1440)))
            .and_then(clip);
        let churned_at = converted_at
            .filter(|_| rng.random_bool(0.18))
            .map(|c| c + TimeDelta::days(rng.random_range(30..400)))
            .and_then(clip);
        let customer_updated = churned_at.or(converted_at).unwrap_or(lead_at);
        out.push(
            records::customer(&customer_id, &rep_id, lead_at)
                .with_converted(converted_at)
                .with_churned(churned_at)
                .with_updated(customer_updated)
                .record(),
        );

        // The deal: won on conversion, otherwise lost (or still open).
        let created_at = lead_at + TimeDelta::hours(rng.random_range(1..72));
        if clip(created_at).is_some() && (converts || rng.random_bool(0.7)) {
            let closed_at = if converts {
                converted_at
            } else {
                clip(created_at + TimeDelta::days(rng.random_range(7..90)))
            };
            let stage = match (closed_at, converts) {
                (None, _) => pb::DealStage::Open,
                (Some(_), true) => pb::DealStage::Won,
                (Some(_), false) => pb::DealStage::Lost,
            };
            // Log-uniform between 1,000 and 80,000, to the cent.
            let dollars = (rng.random_range(1_000f64.ln()..80_000f64.ln())).exp();
            let cents = (dollars * 100.0).round() as i64;
            out.push(
                records::deal(
                    next_id("d"),
                    &rep_id,
                    stage,
                    usd_cents(cents),
                    created_at,
                    closed_at,
                )
                .with_customer(&customer_id)
                .record(),
            );
        }

        let Some(converted_at) = converted_at else {
            continue;
        };
        // An NPS survey a month after conversion, for half the customers.
        if let Some(submitted) =
            clip(converted_at + TimeDelta::days(30)).filter(|_| rng.random_bool(0.5))
        {
            let roll: f64 = rng.random::<f64>() * skill;
            let score = match roll {
                r if r > 0.55 => rng.random_range(9..=10),
                r if r > 0.3 => rng.random_range(7..=8),
                _ => rng.random_range(0..=6),
            };
            out.push(
                records::feedback(
                    next_id("f"),
                    &rep_id,
                    pb::FeedbackKind::Nps,
                    score,
                    submitted,
                )
                .with_customer(&customer_id)
                .record(),
            );
        }
        // Zero to three service requests, each perhaps rated (CSAT).
        for _ in 0..rng.random_range(0..=3) {
            let Some(opened) = clip(converted_at + TimeDelta::hours(rng.random_range(1..24 * 200)))
            else {
                continue;
            };
            let responded =
                clip(opened + TimeDelta::minutes(rng.random_range(5..(600.0 / skill) as i64)))
                    .filter(|_| rng.random_bool(0.95));
            let resolved = clip(opened + TimeDelta::hours(rng.random_range(1..120)))
                .filter(|_| rng.random_bool(0.85));
            out.push(
                records::request(next_id("r"), &rep_id, opened)
                    .with_customer(&customer_id)
                    .with_first_response(responded)
                    .with_resolved(resolved)
                    .with_updated(resolved.or(responded).unwrap_or(opened))
                    .record(),
            );
            if let Some(rated) = resolved.filter(|_| rng.random_bool(0.6)) {
                let score = if rng.random_bool((0.5 * skill).min(0.95)) {
                    rng.random_range(4..=5)
                } else {
                    rng.random_range(1..=3)
                };
                out.push(
                    records::feedback(next_id("f"), &rep_id, pb::FeedbackKind::Csat, score, rated)
                        .with_customer(&customer_id)
                        .record(),
                );
            }
        }
    }
    out
}

/// Batches of `size` records from consecutive reps.
pub fn batches(
    options: &DemoOptions,
    start: DateTime<Utc>,
    end: DateTime<Utc>,
) -> impl Iterator<Item = Vec<pb::ActivityRecord>> + Send + use<> {
    let options = options.clone();
    let size = options.batch_size.clamp(1, 1000);
    let reps = options.reps;
    chunks(
        (0..reps).flat_map(move |rep| rep_activity(&options, rep, start, end)),
        size,
    )
}
