//! teams.csv and reps.csv: upserted through the DirectoryService before any
//! activity, so the activity finds its reps. These files describe an
//! organisation (hundreds or thousands of rows), so they are read whole.

use std::{collections::HashSet, future::Future};

use tonic::{Status, transport::Channel};

use super::{
    columns::Item,
    read::{Input, ReadContext, csv_rows},
    report::{Evidence, Origin, Stats},
    send::{Disposition, disposition, pause},
};
use crate::{client::bearer, proto::pb::directory_service_client::DirectoryServiceClient};

/// Failures in a row of one call before the import gives up.
const MAX_ATTEMPTS: u32 = 8;

struct Row<T> {
    origin: Origin,
    fields: csv::StringRecord,
    request: T,
}

/// Upserts every team (parents before their sub-teams, whatever the file
/// order), then every rep row in file order (so a rep's rows can give its
/// team history, oldest move first).
pub async fn import(
    channel: Channel,
    key: &str,
    inputs: &[(usize, Input)],
    context: &ReadContext,
) -> anyhow::Result<()> {
    let client = DirectoryServiceClient::with_interceptor(channel, bearer(key)?);
    let (teams, reps) = read_rows(inputs.to_vec(), context.clone()).await?;

    let in_files: HashSet<String> = teams.iter().map(|r| r.request.team_id.clone()).collect();
    let mut done: HashSet<String> = HashSet::new();
    let mut pending = teams;
    while !pending.is_empty() {
        let (ready, waiting): (Vec<_>, Vec<_>) = pending.into_iter().partition(|row| {
            let parent = &row.request.parent_team_id;
            parent.is_empty() || !in_files.contains(parent) || done.contains(parent)
        });
        if ready.is_empty() {
            for row in waiting {
                let reason = format!(
                    "parent_team_id: team {:?} was not imported (rejected, or the teams form a cycle)",
                    row.request.parent_team_id
                );
                context
                    .rejects
                    .add(row.origin, &reason, Evidence::Fields(&row.fields))?;
            }
            break;
        }
        for row in ready {
            let request = row.request.clone();
            let outcome = call(|| {
                let mut client = client.clone();
                let request = request.clone();
                async move { client.upsert_team(request).await }
            })
            .await?;
            match outcome {
                Ok(_) => {
                    done.insert(row.request.team_id.clone());
                    Stats::bump(&context.stats.teams, 1);
                }
                Err(status) => reject(context, &row, &status)?,
            }
        }
        pending = waiting;
    }

    for row in reps {
        let request = row.request.clone();
        let outcome = call(|| {
            let mut client = client.clone();
            let request = request.clone();
            async move { client.upsert_rep(request).await }
        })
        .await?;
        match outcome {
            Ok(_) => Stats::bump(&context.stats.reps, 1),
            Err(status) => reject(context, &row, &status)?,
        }
    }
    Ok(())
}

type Rows = (
    Vec<Row<crate::proto::pb::UpsertTeamRequest>>,
    Vec<Row<crate::proto::pb::UpsertRepRequest>>,
);

async fn read_rows(inputs: Vec<(usize, Input)>, context: ReadContext) -> anyhow::Result<Rows> {
    tokio::task::spawn_blocking(move || {
        let mut teams = Vec::new();
        let mut reps = Vec::new();
        let mut context = context;
        for (file, input) in &inputs {
            csv_rows(*file, input, &context, |origin, fields, item| {
                let fields = fields.clone();
                match item {
                    Item::Team(request) => teams.push(Row {
                        origin,
                        fields,
                        request,
                    }),
                    Item::Rep(request) => reps.push(Row {
                        origin,
                        fields,
                        request,
                    }),
                    Item::Activity(_) => {}
                }
                Ok(())
            })?;
            context.bytes_before += input.size;
        }
        Ok((teams, reps))
    })
    .await
    .map_err(|err| anyhow::anyhow!("reading the directory files failed: {err}"))?
}

fn reject<T>(context: &ReadContext, row: &Row<T>, status: &Status) -> anyhow::Result<()> {
    context
        .rejects
        .add(row.origin, status.message(), Evidence::Fields(&row.fields))
}

/// One directory call, retried while the service is unavailable; the
/// inner error is a status that rejects the row.
async fn call<T, F, Fut>(mut attempt_call: F) -> anyhow::Result<Result<T, Status>>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, Status>>,
{
    let mut attempt = 0;
    loop {
        let status = match attempt_call().await {
            Ok(value) => return Ok(Ok(value)),
            Err(status) => status,
        };
        match disposition(status.code()) {
            Disposition::Reject => return Ok(Err(status)),
            Disposition::Retry if attempt + 1 < MAX_ATTEMPTS => {
                attempt += 1;
                tokio::time::sleep(pause(attempt)).await;
            }
            _ => anyhow::bail!(
                "the service refused the import: {:?}: {}",
                status.code(),
                status.message()
            ),
        }
    }
}
