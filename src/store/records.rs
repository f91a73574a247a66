//! The five activity record tables, each declared once: `record_table!`
//! names the struct field and the column of each, in order, and everything
//! else is derived from that one list: the SQL type of each column (from
//! the field's type), the locked lookup of stored versions, the insert, the
//! replace, the bound arrays and the decoding of stored rows.

use std::sync::LazyLock;

use chrono::{DateTime, Utc};
use sqlx::{
    Arguments as _, PgConnection, Row as _,
    postgres::{PgArguments, PgRow},
};

use crate::domain::{
    activity::{
        Amount, Channel, Customer, CustomerRequest, Deal, DealStage, Feedback, FeedbackKind,
        Interaction, Tombstone, Version, Versioned,
    },
    money::RateBook,
    sums::{self, Contributions},
};

/// How a field's type is stored: its SQL type, the value bound for it
/// (borrowed where it can be: ids are not copied) and the value read back.
pub trait Stored: Sized {
    /// `numeric` columns travel as text both ways (exact decimals).
    const SQL_TYPE: &'static str;
    type Bind<'a>: sqlx::Encode<'a, sqlx::Postgres>
        + sqlx::Type<sqlx::Postgres>
        + sqlx::postgres::PgHasArrayType
        + Send
    where
        Self: 'a;
    type Read: for<'r> sqlx::Decode<'r, sqlx::Postgres> + sqlx::Type<sqlx::Postgres>;
    fn bind(&self) -> Self::Bind<'_>;
    fn read(stored: Self::Read) -> Result<Self, String>;
}

macro_rules! stored_as_is {
    ($($ty:ty => $sql:literal),+ $(,)?) => {$(
        impl Stored for $ty {
            const SQL_TYPE: &'static str = $sql;
            type Bind<'a> = $ty;
            type Read = $ty;
            fn bind(&self) -> $ty {
                *self
            }
            fn read(stored: $ty) -> Result<Self, String> {
                Ok(stored)
            }
        }
    )+};
}

stored_as_is!(
    DateTime<Utc> => "timestamptz",
    Option<DateTime<Utc>> => "timestamptz",
    i16 => "smallint",
    Option<i32> => "integer",
);

impl Stored for String {
    const SQL_TYPE: &'static str = "text";
    type Bind<'a> = &'a str;
    type Read = String;
    fn bind(&self) -> &str {
        self
    }
    fn read(stored: String) -> Result<Self, String> {
        Ok(stored)
    }
}

impl Stored for Option<String> {
    const SQL_TYPE: &'static str = "text";
    type Bind<'a> = Option<&'a str>;
    type Read = Option<String>;
    fn bind(&self) -> Option<&str> {
        self.as_deref()
    }
    fn read(stored: Option<String>) -> Result<Self, String> {
        Ok(stored)
    }
}

impl Stored for Amount {
    const SQL_TYPE: &'static str = "numeric";
    type Bind<'a> = String;
    type Read = String;
    fn bind(&self) -> String {
        self.to_decimal()
    }
    fn read(stored: String) -> Result<Self, String> {
        Amount::from_decimal(&stored)
    }
}

macro_rules! stored_as_code {
    ($($ty:ty),+) => {$(
        impl Stored for $ty {
            const SQL_TYPE: &'static str = "smallint";
            type Bind<'a> = i16;
            type Read = i16;
            fn bind(&self) -> i16 {
                self.code()
            }
            fn read(stored: i16) -> Result<Self, String> {
                <$ty>::from_code(i32::from(stored)).ok_or_else(|| format!("unknown code {stored}"))
            }
        }
    )+};
}

stored_as_code!(Channel, DealStage, FeedbackKind);

/// The SQL type of the field `field` picks out (inferred, not restated).
fn sql_type<R, T: Stored>(_field: fn(&R) -> &T) -> &'static str {
    T::SQL_TYPE
}

/// Binds one column: the field `field` of every row, as one array.
fn bind_column<R, T: Stored>(
    args: &mut PgArguments,
    rows: &[&R],
    field: fn(&R) -> &T,
) -> Result<(), sqlx::Error> {
    args.add(rows.iter().map(|r| field(r).bind()).collect::<Vec<_>>())
        .map_err(sqlx::Error::Encode)
}

/// Reads one column of a stored row into the type of the field `field`
/// picks out; a stored value the domain rejects is a decode error.
fn read_column<R, T: Stored>(
    row: &PgRow,
    column: &str,
    _field: fn(&R) -> &T,
) -> Result<T, sqlx::Error> {
    let stored: T::Read = row.try_get(column)?;
    T::read(stored)
        .map_err(|e| sqlx::Error::Decode(format!("stored {column} is invalid: {e}").into()))
}

/// How one record type is read and written.
pub trait Table: Versioned + Sized + 'static {
    /// The statements, built once from the table's column list.
    fn sql() -> &'static TableSql;
    /// Binds `rows` as one array per column, in column order.
    fn bind(args: &mut PgArguments, rows: &[&Self]) -> Result<(), sqlx::Error>;
    /// A record from a row of `TableSql::load`.
    fn decode(row: &PgRow) -> Result<Self, sqlx::Error>;
    /// What the record adds to the KPI sums (a deal's amount converted
    /// with `rates`).
    fn contributions(&self, rates: &RateBook) -> Contributions;
}

/// Declares a record table once: the type, the table, the function giving
/// its KPI contributions, and `field: "column"` for every column in order
/// (the id first, the version last).
macro_rules! record_table {
    ($ty:ident in $table:literal, $contributions:expr, { $($field:ident: $column:literal),+ $(,)? }) => {
        impl Table for $ty {
            fn sql() -> &'static TableSql {
                static SQL: LazyLock<TableSql> = LazyLock::new(|| {
                    TableSql::new($table, &[$(($column, sql_type(|r: &$ty| &r.$field))),+])
                });
                &SQL
            }

            fn bind(args: &mut PgArguments, rows: &[&Self]) -> Result<(), sqlx::Error> {
                $(bind_column(args, rows, |r: &$ty| &r.$field)?;)+
                Ok(())
            }

            fn decode(row: &PgRow) -> Result<Self, sqlx::Error> {
                Ok($ty {
                    $($field: read_column(row, $column, |r: &$ty| &r.$field)?,)+
                })
            }

            fn contributions(&self, rates: &RateBook) -> Contributions {
                $contributions(self, rates)
            }
        }
    };
}

record_table!(Customer in "customers", |r: &Customer, _: &RateBook| sums::customer_contributions(r), {
    id: "customer_id",
    rep_id: "rep_id",
    lead_at: "lead_at",
    converted_at: "converted_at",
    churned_at: "churned_at",
    updated_at: "source_updated_at",
});

record_table!(Interaction in "interactions", |r: &Interaction, _: &RateBook| sums::interaction_contributions(r), {
    id: "interaction_id",
    rep_id: "rep_id",
    customer_id: "customer_id",
    channel: "channel",
    occurred_at: "occurred_at",
    duration_seconds: "duration_seconds",
    updated_at: "source_updated_at",
});

record_table!(Deal in "deals", sums::deal_contributions, {
    id: "deal_id",
    rep_id: "rep_id",
    customer_id: "customer_id",
    currency: "currency",
    amount: "amount",
    stage: "stage",
    created_at: "created_at",
    closed_at: "closed_at",
    updated_at: "source_updated_at",
});

record_table!(Feedback in "feedback", |r: &Feedback, _: &RateBook| sums::feedback_contributions(r), {
    id: "feedback_id",
    rep_id: "rep_id",
    customer_id: "customer_id",
    kind: "kind",
    score: "score",
    submitted_at: "submitted_at",
    comment: "comment",
    updated_at: "source_updated_at",
});

record_table!(CustomerRequest in "customer_requests", |r: &CustomerRequest, _: &RateBook| sums::request_contributions(r), {
    id: "request_id",
    rep_id: "rep_id",
    customer_id: "customer_id",
    opened_at: "opened_at",
    first_response_at: "first_response_at",
    resolved_at: "resolved_at",
    updated_at: "source_updated_at",
});

/// The stored versions of `ids` (records and tombstones), locked for the
/// transaction, in id order (through the primary key: see
/// `store::activity::BEGIN_BATCH`).
pub async fn load<T: Table>(
    conn: &mut PgConnection,
    ids: &[&str],
) -> Result<Vec<Version<T>>, sqlx::Error> {
    sqlx::query(sqlx::AssertSqlSafe(T::sql().load.as_str()))
        .bind(ids)
        .fetch_all(conn)
        .await?
        .iter()
        .map(|row| {
            if row.try_get::<bool, _>("deleted")? {
                Ok(Version::Deleted(Tombstone {
                    id: row.try_get(0)?,
                    updated_at: row.try_get("source_updated_at")?,
                }))
            } else {
                T::decode(row).map(Version::Live)
            }
        })
        .collect()
}

/// Stores tombstones of ids that have no stored version (sorted by id; a
/// concurrent insert of the same id fails the statement with a unique
/// violation, as `upsert` does).
pub async fn insert_tombstones<T: Table>(
    conn: &mut PgConnection,
    tombstones: &[&Tombstone],
) -> Result<(), sqlx::Error> {
    sqlx::query(sqlx::AssertSqlSafe(T::sql().bury_new.as_str()))
        .bind(tombstones.iter().map(|t| t.id.as_str()).collect::<Vec<_>>())
        .bind(tombstones.iter().map(|t| t.updated_at).collect::<Vec<_>>())
        .execute(conn)
        .await?;
    Ok(())
}

/// Turns stored versions (locked by `load`) into tombstones: every column
/// but the id NULL, the deletion's version kept; only versions the
/// deletion is newer than (see `VersionKey`).
pub async fn bury<T: Table>(
    conn: &mut PgConnection,
    tombstones: &[&Tombstone],
) -> Result<(), sqlx::Error> {
    sqlx::query(sqlx::AssertSqlSafe(T::sql().bury.as_str()))
        .bind(tombstones.iter().map(|t| t.id.as_str()).collect::<Vec<_>>())
        .bind(tombstones.iter().map(|t| t.updated_at).collect::<Vec<_>>())
        .execute(conn)
        .await?;
    Ok(())
}

/// Inserts `rows` (sorted by id; an id inserted meanwhile by a concurrent
/// batch fails the statement with a unique violation, and the batch is
/// retried); with `replace`, replaces the stored rows (locked by `load`)
/// whose version is older.
pub async fn upsert<T: Table>(
    conn: &mut PgConnection,
    rows: &[&T],
    replace: bool,
) -> Result<(), sqlx::Error> {
    let mut args = PgArguments::default();
    T::bind(&mut args, rows)?;
    sqlx::query_with(sqlx::AssertSqlSafe(T::sql().write(replace)), args)
        .execute(conn)
        .await?;
    Ok(())
}

/// The statements of one record table, from one list of its columns: the
/// locked lookup of stored versions by id, a plain insert for new ids, and
/// an upsert that replaces older versions. Rows are written as one array
/// per column, unnested in the select list (no per-column tuplestore).
pub struct TableSql {
    /// (name, SQL type) of every column, the id first.
    columns: Vec<(String, String)>,
    load: String,
    insert: String,
    replace: String,
    bury_new: String,
    bury: String,
}

impl TableSql {
    /// `columns`: (name, SQL type), the id first. `numeric` columns travel
    /// as text both ways (exact decimals).
    fn new(table: &str, columns: &[(&str, &str)]) -> Self {
        let names: Vec<&str> = columns.iter().map(|c| c.0).collect();
        let id = names.first().copied().unwrap_or_default();
        let read: Vec<String> = columns
            .iter()
            .map(|(name, ty)| match *ty {
                "numeric" => format!("{name}::text AS {name}"),
                _ => (*name).to_owned(),
            })
            .collect();
        let values: Vec<String> = columns
            .iter()
            .enumerate()
            .map(|(i, (_, ty))| match *ty {
                "numeric" => format!("unnest(${}::text[])::numeric", i + 1),
                _ => format!("unnest(${}::{ty}[])", i + 1),
            })
            .collect();
        // The gate (one index descent) skips the 1000 probes when no stored
        // id lies between the batch's least and greatest: a bulk sync of
        // new records, or new ids above all stored ones.
        // (The bounds are computed once, as parameters of the gate's index
        // scan: no join for the planner to get wrong on a table it
        // believes empty.)
        let load = format!(
            "WITH r AS MATERIALIZED (SELECT min(x) AS lo, max(x) AS hi FROM unnest($1::text[]) x) \
             SELECT {}, deleted FROM {table} WHERE {id} = ANY($1) \
             AND EXISTS (SELECT 1 FROM {table} s \
                         WHERE s.{id} BETWEEN (SELECT lo FROM r) AND (SELECT hi FROM r)) \
             ORDER BY {id} FOR UPDATE",
            read.join(", ")
        );
        let insert = format!(
            "INSERT INTO {table} AS cur ({}) SELECT {}",
            names.join(", "),
            values.join(", ")
        );
        let sets: Vec<String> = names
            .iter()
            .skip(1)
            .map(|c| format!("{c} = EXCLUDED.{c}"))
            .collect();
        // A newer version replaces a record or restores a deleted one.
        let replace = format!(
            "{insert} ON CONFLICT ({id}) DO UPDATE SET {}, deleted = false, recorded_at = now() \
             WHERE EXCLUDED.source_updated_at > cur.source_updated_at",
            sets.join(", ")
        );
        let bury_new = format!(
            "INSERT INTO {table} ({id}, deleted, source_updated_at) \
             SELECT unnest($1::text[]), true, unnest($2::timestamptz[])"
        );
        let cleared: Vec<String> = names
            .iter()
            .skip(1)
            .filter(|c| **c != "source_updated_at")
            .map(|c| format!("{c} = NULL"))
            .collect();
        // (stored version, deleted) < (deletion's version, true): a record
        // of the same version or older, or an older tombstone.
        let bury = format!(
            "UPDATE {table} AS cur SET deleted = true, {}, source_updated_at = d.v, recorded_at = now() \
             FROM unnest($1::text[], $2::timestamptz[]) AS d (id, v) \
             WHERE cur.{id} = d.id AND (cur.source_updated_at, cur.deleted) < (d.v, true)",
            cleared.join(", ")
        );
        Self {
            columns: columns
                .iter()
                .map(|(n, t)| ((*n).to_owned(), (*t).to_owned()))
                .collect(),
            load,
            insert,
            replace,
            bury_new,
            bury,
        }
    }

    /// The columns `decode` reads, of the table aliased `alias`.
    pub fn columns(&self, alias: &str) -> String {
        self.columns
            .iter()
            .map(|(name, ty)| match ty.as_str() {
                "numeric" => format!("{alias}.{name}::text AS {name}"),
                _ => format!("{alias}.{name}"),
            })
            .collect::<Vec<_>>()
            .join(", ")
    }

    fn write(&self, replace: bool) -> &str {
        if replace { &self.replace } else { &self.insert }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_column_list_gives_the_lookup_and_both_writes() {
        let deals = Deal::sql();
        assert_eq!(
            deals.load,
            "WITH r AS MATERIALIZED (SELECT min(x) AS lo, max(x) AS hi FROM unnest($1::text[]) x) \
             SELECT deal_id, rep_id, customer_id, currency, amount::text AS amount, stage, \
             created_at, closed_at, source_updated_at, deleted FROM deals WHERE deal_id = ANY($1) \
             AND EXISTS (SELECT 1 FROM deals s \
             WHERE s.deal_id BETWEEN (SELECT lo FROM r) AND (SELECT hi FROM r)) \
             ORDER BY deal_id FOR UPDATE"
        );
        assert!(
            deals
                .insert
                .contains("unnest($5::text[])::numeric, unnest($6::smallint[])")
        );
        assert!(!deals.insert.contains("ON CONFLICT"));
        assert!(deals.replace.starts_with(deals.insert.as_str()));
        assert!(
            deals
                .replace
                .contains("ON CONFLICT (deal_id) DO UPDATE SET rep_id = EXCLUDED.rep_id")
        );
    }

    #[test]
    fn a_deletion_clears_every_column_but_the_id_and_keeps_its_version() {
        let deals = Deal::sql();
        assert_eq!(
            deals.bury,
            "UPDATE deals AS cur SET deleted = true, rep_id = NULL, customer_id = NULL, \
             currency = NULL, amount = NULL, stage = NULL, created_at = NULL, closed_at = NULL, \
             source_updated_at = d.v, recorded_at = now() \
             FROM unnest($1::text[], $2::timestamptz[]) AS d (id, v) \
             WHERE cur.deal_id = d.id AND (cur.source_updated_at, cur.deleted) < (d.v, true)"
        );
        assert!(deals.replace.contains("deleted = false"));
        assert!(
            deals
                .bury_new
                .starts_with("INSERT INTO deals (deal_id, deleted, source_updated_at)")
        );
    }

    #[test]
    fn column_types_follow_the_field_types() {
        let interactions = Interaction::sql();
        assert!(interactions.insert.contains(
            "unnest($1::text[]), unnest($2::text[]), unnest($3::text[]), \
             unnest($4::smallint[]), unnest($5::timestamptz[]), unnest($6::integer[]), \
             unnest($7::timestamptz[])"
        ));
        assert!(Feedback::sql().insert.contains("unnest($5::smallint[])"));
    }
}
