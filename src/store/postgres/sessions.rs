//! Streamable HTTP sessions on PostgreSQL (`mcp_sessions`, `sql/postgres/V0007__replicas.sql`).
//!
//! Opening a session counts its credential's sessions under a transaction-level advisory lock
//! keyed by the credential, so that two replicas opening sessions of one token at once take
//! turns at the cap. Deleting a row announces it (`e <id>`, by trigger).

use deadpool_postgres::GenericClient;
use time::OffsetDateTime;
use tokio_postgres::Row;
use uuid::Uuid;

use super::{Fail, PgStore, fail};
use crate::store::{McpSessionRecord, StoreResult};

fn session_from_row(row: &Row) -> Result<McpSessionRecord, Fail> {
    Ok(McpSessionRecord {
        id: row.try_get(0)?,
        user_id: row.try_get(1)?,
        token_id: row.try_get(2)?,
        scopes: row.try_get(3)?,
        protocol_version: row.try_get(4)?,
        client_capabilities: row.try_get(5)?,
        created_at: row.try_get(6)?,
        last_seen_at: row.try_get(7)?,
    })
}

/// The advisory lock key of a credential's sessions: its id's first eight bytes.
fn lock_key(token_id: Uuid) -> i64 {
    let bytes = token_id.as_bytes();
    i64::from_be_bytes([
        bytes[0], bytes[1], bytes[2], bytes[3], bytes[4], bytes[5], bytes[6], bytes[7],
    ])
}

impl PgStore {
    pub(crate) async fn insert_mcp_session(
        &self,
        session: &McpSessionRecord,
        max_per_token: u32,
    ) -> StoreResult<Vec<String>> {
        let mut client = self.client().await?;
        let run = async {
            let tx = client.transaction().await?;
            tx.execute(
                "SELECT pg_advisory_xact_lock($1)",
                &[&lock_key(session.token_id)],
            )
            .await?;
            let stmt = tx
                .prepare_cached(
                    "INSERT INTO mcp_sessions (id, user_id, token_id, scopes, protocol_version,
                                               client_capabilities, created_at, last_seen_at)
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
                )
                .await?;
            tx.execute(
                &stmt,
                &[
                    &session.id,
                    &session.user_id,
                    &session.token_id,
                    &session.scopes,
                    &session.protocol_version,
                    &session.client_capabilities,
                    &session.created_at,
                    &session.last_seen_at,
                ],
            )
            .await?;
            // The count is kept by a trigger (sql/postgres/V0009__session_counts.sql): one row
            // read, however many sessions the token holds. Past the cap, the least recently used
            // of the others go.
            let stmt = tx
                .prepare_cached("SELECT held FROM mcp_session_counts WHERE token_id = $1")
                .await?;
            let held: i64 = tx
                .query_one(&stmt, &[&session.token_id])
                .await?
                .try_get(0)?;
            let over = held - i64::from(max_per_token.max(1));
            let evicted: Vec<String> = if over > 0 {
                let stmt = tx
                    .prepare_cached(
                        "SELECT id FROM mcp_sessions WHERE token_id = $1 AND id <> $2
                         ORDER BY last_seen_at, created_at, id LIMIT $3",
                    )
                    .await?;
                tx.query(&stmt, &[&session.token_id, &session.id, &over])
                    .await?
                    .iter()
                    .map(|row| row.try_get(0))
                    .collect::<Result<_, _>>()?
            } else {
                Vec::new()
            };
            if !evicted.is_empty() {
                let stmt = tx
                    .prepare_cached("DELETE FROM mcp_sessions WHERE id = ANY($1)")
                    .await?;
                tx.execute(&stmt, &[&evicted]).await?;
            }
            tx.commit().await?;
            Ok(evicted)
        };
        run.await.map_err(fail("recording an MCP session"))
    }

    pub(crate) async fn mcp_session(&self, id: &str) -> StoreResult<Option<McpSessionRecord>> {
        let client = self.client().await?;
        let run = async {
            let stmt = client
                .prepare_cached(
                    "SELECT id, user_id, token_id, scopes, protocol_version, client_capabilities,
                            created_at, last_seen_at
                     FROM mcp_sessions WHERE id = $1",
                )
                .await?;
            client
                .query_opt(&stmt, &[&id])
                .await?
                .as_ref()
                .map(session_from_row)
                .transpose()
        };
        run.await.map_err(fail("reading an MCP session"))
    }

    pub(crate) async fn delete_mcp_session(&self, id: &str) -> StoreResult<bool> {
        let client = self.client().await?;
        let run = async {
            let stmt = client
                .prepare_cached("DELETE FROM mcp_sessions WHERE id = $1")
                .await?;
            Ok(client.execute(&stmt, &[&id]).await? > 0)
        };
        run.await.map_err(fail("ending an MCP session"))
    }

    pub(crate) async fn touch_mcp_sessions(
        &self,
        seen: &[(String, OffsetDateTime)],
    ) -> StoreResult<()> {
        if seen.is_empty() {
            return Ok(());
        }
        let (ids, ats): (Vec<&str>, Vec<OffsetDateTime>) =
            seen.iter().map(|(id, at)| (id.as_str(), *at)).unzip();
        let client = self.client().await?;
        let run = async {
            let stmt = client
                .prepare_cached(
                    "UPDATE mcp_sessions s
                     SET last_seen_at = GREATEST(s.last_seen_at, u.at)
                     FROM (SELECT id, max(at) AS at
                           FROM unnest($1::text[], $2::timestamptz[]) AS x(id, at)
                           GROUP BY id) u
                     WHERE s.id = u.id",
                )
                .await?;
            client.execute(&stmt, &[&ids, &ats]).await?;
            Ok(())
        };
        run.await.map_err(fail("recording MCP session use"))
    }

    pub(crate) async fn reap_mcp_sessions(&self, before: OffsetDateTime) -> StoreResult<u64> {
        let client = self.client().await?;
        let run = async {
            let stmt = client
                .prepare_cached("DELETE FROM mcp_sessions WHERE last_seen_at < $1")
                .await?;
            Ok(client.execute(&stmt, &[&before]).await?)
        };
        run.await.map_err(fail("ending idle MCP sessions"))
    }
}
