//! Imported skills' sources on SQLite (`skill_sources`, `sql/sqlite/V0008__skill_sources.sql`).

use rusqlite::{OptionalExtension, Row, Transaction, params};
use time::OffsetDateTime;
use uuid::Uuid;

use super::{SqliteStore, micros, opt_time_at, time_at};
use crate::store::{NewSource, SourceRecord, StoreResult};

const COLUMNS: &str = "skill_id, user_id, url, git_ref, path, commit_id, synced_version, \
                       sync_interval_hours, synced_at, checked_at, next_sync_at, last_error";

fn source_at(row: &Row<'_>) -> rusqlite::Result<SourceRecord> {
    Ok(SourceRecord {
        skill_id: row.get(0)?,
        user_id: row.get(1)?,
        url: row.get(2)?,
        git_ref: row.get(3)?,
        path: row.get(4)?,
        commit_id: row.get(5)?,
        synced_version: row.get(6)?,
        sync_interval_hours: row.get(7)?,
        synced_at: time_at(row, 8)?,
        checked_at: time_at(row, 9)?,
        next_sync_at: opt_time_at(row, 10)?,
        last_error: row.get(11)?,
    })
}

/// Inserts or replaces a skill's source, as part of the transaction that writes its version.
pub(super) fn upsert(
    tx: &Transaction<'_>,
    user_id: Uuid,
    source: &NewSource,
    now: i64,
) -> rusqlite::Result<()> {
    tx.prepare_cached(
        "INSERT INTO skill_sources (skill_id, user_id, url, git_ref, path, commit_id,
                                    synced_version, sync_interval_hours, synced_at, checked_at,
                                    next_sync_at, last_error)
         SELECT ?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?9, ?10, NULL
         WHERE EXISTS (SELECT 1 FROM skills WHERE id = ?1 AND user_id = ?2)
         ON CONFLICT (skill_id) DO UPDATE SET
             url = excluded.url, git_ref = excluded.git_ref, path = excluded.path,
             commit_id = excluded.commit_id, synced_version = excluded.synced_version,
             sync_interval_hours = CASE WHEN ?11 THEN skill_sources.sync_interval_hours
                                        ELSE excluded.sync_interval_hours END,
             next_sync_at = CASE WHEN ?11 THEN skill_sources.next_sync_at
                                 ELSE excluded.next_sync_at END,
             synced_at = excluded.synced_at, checked_at = excluded.checked_at, last_error = NULL",
    )?
    .execute(params![
        source.skill_id,
        user_id,
        source.url,
        source.git_ref,
        source.path,
        source.commit_id,
        source.synced_version,
        source.sync_interval_hours,
        now,
        source.next_sync_at.map(micros),
        source.keep_interval,
    ])?;
    Ok(())
}

impl SqliteStore {
    pub(crate) async fn sources(&self, user_id: Uuid) -> StoreResult<Vec<SourceRecord>> {
        self.with_conn("reading skill sources", move |c| {
            c.prepare_cached(&format!(
                "SELECT {COLUMNS} FROM skill_sources WHERE user_id = ?1 ORDER BY url, path"
            ))?
            .query_map([user_id], source_at)?
            .collect()
        })
        .await
    }

    pub(crate) async fn source(
        &self,
        user_id: Uuid,
        skill_id: Uuid,
    ) -> StoreResult<Option<SourceRecord>> {
        self.with_conn("reading a skill source", move |c| {
            c.prepare_cached(&format!(
                "SELECT {COLUMNS} FROM skill_sources WHERE skill_id = ?2 AND user_id = ?1"
            ))?
            .query_row(params![user_id, skill_id], source_at)
            .optional()
        })
        .await
    }

    pub(crate) async fn record_sync(
        &self,
        user_id: Uuid,
        skill_id: Uuid,
        synced: Option<(&str, i64)>,
        error: Option<&str>,
        now: OffsetDateTime,
    ) -> StoreResult<bool> {
        let synced = synced.map(|(commit, version)| (commit.to_owned(), version));
        let error = error.map(str::to_owned);
        self.write("recording a sync", move |tx| {
            let (commit, version) = synced.unzip();
            Ok(tx
                .prepare_cached(
                    "UPDATE skill_sources
                     SET commit_id = coalesce(?3, commit_id),
                         synced_version = coalesce(?4, synced_version),
                         synced_at = CASE WHEN ?3 IS NULL THEN synced_at ELSE ?5 END,
                         checked_at = ?5, last_error = ?6
                     WHERE skill_id = ?2 AND user_id = ?1",
                )?
                .execute(params![
                    user_id,
                    skill_id,
                    commit,
                    version,
                    micros(now),
                    error
                ])?
                > 0)
        })
        .await
    }

    pub(crate) async fn set_sync_interval(
        &self,
        user_id: Uuid,
        skill_id: Uuid,
        hours: Option<i64>,
        now: OffsetDateTime,
    ) -> StoreResult<bool> {
        self.write("setting a sync interval", move |tx| {
            Ok(tx
                .prepare_cached(
                    "UPDATE skill_sources
                     SET sync_interval_hours = ?3,
                         next_sync_at = ?4 + ?3 * 3600000000
                     WHERE skill_id = ?2 AND user_id = ?1",
                )?
                .execute(params![user_id, skill_id, hours, micros(now)])?
                > 0)
        })
        .await
    }

    pub(crate) async fn claim_due_sources(
        &self,
        now: OffsetDateTime,
        limit: u32,
    ) -> StoreResult<Vec<SourceRecord>> {
        self.write("claiming due syncs", move |tx| {
            tx.prepare_cached(&format!(
                "UPDATE skill_sources
                 SET next_sync_at = ?1 + sync_interval_hours * 3600000000
                 WHERE skill_id IN (SELECT skill_id FROM skill_sources
                                    WHERE next_sync_at <= ?1
                                    ORDER BY next_sync_at LIMIT ?2)
                 RETURNING {COLUMNS}"
            ))?
            .query_map(params![micros(now), limit], source_at)?
            .collect()
        })
        .await
    }
}
