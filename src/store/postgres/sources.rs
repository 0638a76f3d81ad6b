//! Imported skills' sources on PostgreSQL (`skill_sources`,
//! `sql/postgres/V0008__skill_sources.sql`).

use deadpool_postgres::{GenericClient, Transaction};
use time::OffsetDateTime;
use tokio_postgres::Row;
use uuid::Uuid;

use super::{Fail, PgStore, fail};
use crate::store::{NewSource, SourceRecord, StoreResult};

const COLUMNS: &str = "skill_id, user_id, url, git_ref, path, commit_id, synced_version, \
                       sync_interval_hours, synced_at, checked_at, next_sync_at, last_error";

fn source_from_row(row: &Row) -> Result<SourceRecord, Fail> {
    Ok(SourceRecord {
        skill_id: row.try_get(0)?,
        user_id: row.try_get(1)?,
        url: row.try_get(2)?,
        git_ref: row.try_get(3)?,
        path: row.try_get(4)?,
        commit_id: row.try_get(5)?,
        synced_version: row.try_get(6)?,
        sync_interval_hours: row.try_get(7)?,
        synced_at: row.try_get(8)?,
        checked_at: row.try_get(9)?,
        next_sync_at: row.try_get(10)?,
        last_error: row.try_get(11)?,
    })
}

/// Inserts or replaces a skill's source, as part of the transaction that writes its version.
pub(super) async fn upsert(
    tx: &Transaction<'_>,
    user_id: Uuid,
    source: &NewSource,
    now: OffsetDateTime,
) -> Result<(), Fail> {
    let stmt = tx
        .prepare_cached(
            "INSERT INTO skill_sources (skill_id, user_id, url, git_ref, path, commit_id,
                                        synced_version, sync_interval_hours, synced_at,
                                        checked_at, next_sync_at, last_error)
             SELECT $1, $2, $3, $4, $5, $6, $7, $8, $9, $9, $10, NULL
             WHERE EXISTS (SELECT 1 FROM skills WHERE id = $1 AND user_id = $2)
             ON CONFLICT (skill_id) DO UPDATE SET
                 url = excluded.url, git_ref = excluded.git_ref, path = excluded.path,
                 commit_id = excluded.commit_id, synced_version = excluded.synced_version,
                 sync_interval_hours = CASE WHEN $11 THEN skill_sources.sync_interval_hours
                                            ELSE excluded.sync_interval_hours END,
                 next_sync_at = CASE WHEN $11 THEN skill_sources.next_sync_at
                                     ELSE excluded.next_sync_at END,
                 synced_at = excluded.synced_at, checked_at = excluded.checked_at,
                 last_error = NULL",
        )
        .await?;
    tx.execute(
        &stmt,
        &[
            &source.skill_id,
            &user_id,
            &source.url,
            &source.git_ref,
            &source.path,
            &source.commit_id,
            &source.synced_version,
            &source.sync_interval_hours,
            &now,
            &source.next_sync_at,
            &source.keep_interval,
        ],
    )
    .await?;
    Ok(())
}

impl PgStore {
    pub(crate) async fn sources(&self, user_id: Uuid) -> StoreResult<Vec<SourceRecord>> {
        let client = self.client().await?;
        let run = async {
            let stmt = client
                .prepare_cached(&format!(
                    "SELECT {COLUMNS} FROM skill_sources WHERE user_id = $1 ORDER BY url, path"
                ))
                .await?;
            client
                .query(&stmt, &[&user_id])
                .await?
                .iter()
                .map(source_from_row)
                .collect::<Result<Vec<_>, Fail>>()
        };
        run.await.map_err(fail("reading skill sources"))
    }

    pub(crate) async fn source(
        &self,
        user_id: Uuid,
        skill_id: Uuid,
    ) -> StoreResult<Option<SourceRecord>> {
        let client = self.client().await?;
        let run = async {
            let stmt = client
                .prepare_cached(&format!(
                    "SELECT {COLUMNS} FROM skill_sources WHERE skill_id = $2 AND user_id = $1"
                ))
                .await?;
            client
                .query_opt(&stmt, &[&user_id, &skill_id])
                .await?
                .as_ref()
                .map(source_from_row)
                .transpose()
        };
        run.await.map_err(fail("reading a skill source"))
    }

    pub(crate) async fn record_sync(
        &self,
        user_id: Uuid,
        skill_id: Uuid,
        synced: Option<(&str, i64)>,
        error: Option<&str>,
        now: OffsetDateTime,
    ) -> StoreResult<bool> {
        let (commit, version) = synced.unzip();
        let client = self.client().await?;
        let run = async {
            let stmt = client
                .prepare_cached(
                    "UPDATE skill_sources
                     SET commit_id = coalesce($3, commit_id),
                         synced_version = coalesce($4, synced_version),
                         synced_at = CASE WHEN $3::text IS NULL THEN synced_at ELSE $5 END,
                         checked_at = $5, last_error = $6
                     WHERE skill_id = $2 AND user_id = $1",
                )
                .await?;
            Ok(client
                .execute(
                    &stmt,
                    &[&user_id, &skill_id, &commit, &version, &now, &error],
                )
                .await?
                > 0)
        };
        run.await.map_err(fail("recording a sync"))
    }

    pub(crate) async fn set_sync_interval(
        &self,
        user_id: Uuid,
        skill_id: Uuid,
        hours: Option<i64>,
        now: OffsetDateTime,
    ) -> StoreResult<bool> {
        let client = self.client().await?;
        let run = async {
            let stmt = client
                .prepare_cached(
                    "UPDATE skill_sources
                     SET sync_interval_hours = $3,
                         next_sync_at = $4::timestamptz + interval '1 hour' * $3::bigint
                     WHERE skill_id = $2 AND user_id = $1",
                )
                .await?;
            Ok(client
                .execute(&stmt, &[&user_id, &skill_id, &hours, &now])
                .await?
                > 0)
        };
        run.await.map_err(fail("setting a sync interval"))
    }

    pub(crate) async fn claim_due_sources(
        &self,
        now: OffsetDateTime,
        limit: u32,
    ) -> StoreResult<Vec<SourceRecord>> {
        let client = self.client().await?;
        let run = async {
            let stmt = client
                .prepare_cached(&format!(
                    "UPDATE skill_sources
                     SET next_sync_at = $1 + make_interval(hours => sync_interval_hours::int)
                     WHERE skill_id IN (SELECT skill_id FROM skill_sources
                                        WHERE next_sync_at <= $1
                                        ORDER BY next_sync_at LIMIT $2
                                        FOR UPDATE SKIP LOCKED)
                     RETURNING {COLUMNS}"
                ))
                .await?;
            client
                .query(&stmt, &[&now, &i64::from(limit)])
                .await?
                .iter()
                .map(source_from_row)
                .collect::<Result<Vec<_>, Fail>>()
        };
        run.await.map_err(fail("claiming due syncs"))
    }
}
