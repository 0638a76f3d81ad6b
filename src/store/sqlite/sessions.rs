//! Streamable HTTP sessions on SQLite (`mcp_sessions`, `sql/sqlite/V0007__replicas.sql`): one
//! process serves SQLite, so these rows only keep the two back ends alike.

use rusqlite::{OptionalExtension, Row, params};
use time::OffsetDateTime;

use super::{SqliteStore, micros, time_at};
use crate::store::{McpSessionRecord, StoreResult};

fn session_at(row: &Row<'_>) -> rusqlite::Result<McpSessionRecord> {
    Ok(McpSessionRecord {
        id: row.get(0)?,
        user_id: row.get(1)?,
        token_id: row.get(2)?,
        scopes: row.get(3)?,
        protocol_version: row.get(4)?,
        client_capabilities: row.get(5)?,
        created_at: time_at(row, 6)?,
        last_seen_at: time_at(row, 7)?,
    })
}

impl SqliteStore {
    pub(crate) async fn insert_mcp_session(
        &self,
        session: &McpSessionRecord,
        max_per_token: u32,
    ) -> StoreResult<Vec<String>> {
        let session = session.clone();
        self.write("recording an MCP session", move |tx| {
            tx.prepare_cached(
                "INSERT INTO mcp_sessions (id, user_id, token_id, scopes, protocol_version,
                                           client_capabilities, created_at, last_seen_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
            )?
            .execute(params![
                session.id,
                session.user_id,
                session.token_id,
                session.scopes,
                session.protocol_version,
                session.client_capabilities,
                micros(session.created_at),
                micros(session.last_seen_at),
            ])?;
            // The count is kept by a trigger (sql/sqlite/V0009__session_counts.sql): one row read,
            // however many sessions the token holds. Past the cap, the least recently used of the
            // others go.
            let held: i64 = tx
                .prepare_cached("SELECT held FROM mcp_session_counts WHERE token_id = ?1")?
                .query_row([session.token_id], |row| row.get(0))?;
            let over = held - i64::from(max_per_token.max(1));
            let evicted: Vec<String> = if over > 0 {
                tx.prepare_cached(
                    "SELECT id FROM mcp_sessions WHERE token_id = ?1 AND id <> ?2
                     ORDER BY last_seen_at, created_at, id LIMIT ?3",
                )?
                .query_map(params![session.token_id, session.id, over], |row| {
                    row.get(0)
                })?
                .collect::<rusqlite::Result<_>>()?
            } else {
                Vec::new()
            };
            for id in &evicted {
                tx.prepare_cached("DELETE FROM mcp_sessions WHERE id = ?1")?
                    .execute([id])?;
            }
            Ok(evicted)
        })
        .await
    }

    pub(crate) async fn mcp_session(&self, id: &str) -> StoreResult<Option<McpSessionRecord>> {
        let id = id.to_owned();
        self.with_conn("reading an MCP session", move |c| {
            c.prepare_cached(
                "SELECT id, user_id, token_id, scopes, protocol_version, client_capabilities,
                        created_at, last_seen_at
                 FROM mcp_sessions WHERE id = ?1",
            )?
            .query_row([id], session_at)
            .optional()
        })
        .await
    }

    pub(crate) async fn delete_mcp_session(&self, id: &str) -> StoreResult<bool> {
        let id = id.to_owned();
        self.with_conn("ending an MCP session", move |c| {
            Ok(c.prepare_cached("DELETE FROM mcp_sessions WHERE id = ?1")?
                .execute([id])?
                > 0)
        })
        .await
    }

    pub(crate) async fn touch_mcp_sessions(
        &self,
        seen: &[(String, OffsetDateTime)],
    ) -> StoreResult<()> {
        if seen.is_empty() {
            return Ok(());
        }
        let seen = seen.to_vec();
        self.write("recording MCP session use", move |tx| {
            let mut stmt = tx.prepare_cached(
                "UPDATE mcp_sessions SET last_seen_at = max(last_seen_at, ?2) WHERE id = ?1",
            )?;
            for (id, at) in &seen {
                stmt.execute(params![id, micros(*at)])?;
            }
            Ok(())
        })
        .await
    }

    pub(crate) async fn reap_mcp_sessions(&self, before: OffsetDateTime) -> StoreResult<u64> {
        self.with_conn("ending idle MCP sessions", move |c| {
            Ok(
                c.prepare_cached("DELETE FROM mcp_sessions WHERE last_seen_at < ?1")?
                    .execute([micros(before)])? as u64,
            )
        })
        .await
    }
}
