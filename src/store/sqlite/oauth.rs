//! OAuth clients, codes, grants and refresh tokens on SQLite (`sql/sqlite/V0006__oauth.sql`).

use rusqlite::{OptionalExtension, Row, Transaction, params};
use time::OffsetDateTime;
use uuid::Uuid;

use super::{SqliteStore, bump_epoch, micros, opt_time_at, time_at};
use crate::store::{
    CodeRedemption, NewOAuthCode, NewOAuthGrant, OAuthClientRecord, OAuthCodeGrant,
    OAuthGrantRecord, RefreshRotation, StoreResult,
};

const GRANT_COLUMNS: &str = "g.id, g.user_id, g.client_id, g.client_name, g.scopes, g.resource,
     g.created_at, g.last_used_at, g.expires_at";

fn grant_at(row: &Row<'_>) -> rusqlite::Result<OAuthGrantRecord> {
    Ok(OAuthGrantRecord {
        id: row.get(0)?,
        user_id: row.get(1)?,
        client_id: row.get(2)?,
        client_name: row.get(3)?,
        scopes: row.get(4)?,
        resource: row.get(5)?,
        created_at: time_at(row, 6)?,
        last_used_at: opt_time_at(row, 7)?,
        expires_at: time_at(row, 8)?,
    })
}

fn delete_grant(tx: &Transaction<'_>, id: Uuid) -> rusqlite::Result<bool> {
    let found = tx
        .prepare_cached("DELETE FROM oauth_grants WHERE id = ?1")?
        .execute([id])?
        > 0;
    if found {
        bump_epoch(tx)?;
    }
    Ok(found)
}

impl SqliteStore {
    pub(crate) async fn insert_oauth_client(&self, client: &OAuthClientRecord) -> StoreResult<()> {
        let client = client.clone();
        self.write("registering an OAuth client", move |tx| {
            tx.prepare_cached(
                "INSERT INTO oauth_clients
                     (client_id, client_name, redirect_uris, metadata, created_at, used_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            )?
            .execute(params![
                client.client_id,
                client.client_name,
                client.redirect_uris,
                client.metadata,
                micros(client.created_at),
                client.used_at.map(micros),
            ])?;
            Ok(())
        })
        .await
    }

    pub(crate) async fn oauth_client(
        &self,
        client_id: &str,
    ) -> StoreResult<Option<OAuthClientRecord>> {
        let client_id = client_id.to_owned();
        self.with_conn("reading an OAuth client", move |c| {
            c.prepare_cached(
                "SELECT client_id, client_name, redirect_uris, metadata, created_at, used_at
                 FROM oauth_clients WHERE client_id = ?1",
            )?
            .query_row([client_id], |row| {
                Ok(OAuthClientRecord {
                    client_id: row.get(0)?,
                    client_name: row.get(1)?,
                    redirect_uris: row.get(2)?,
                    metadata: row.get(3)?,
                    created_at: time_at(row, 4)?,
                    used_at: opt_time_at(row, 5)?,
                })
            })
            .optional()
        })
        .await
    }

    pub(crate) async fn insert_oauth_code(&self, code: &NewOAuthCode) -> StoreResult<()> {
        let code = code.clone();
        self.write("issuing an authorization code", move |tx| {
            let g = &code.grant;
            tx.prepare_cached(
                "INSERT INTO oauth_codes
                     (code_hash, user_id, client_id, client_name, redirect_uri, code_challenge,
                      scopes, resource, created_at, expires_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)",
            )?
            .execute(params![
                code.code_hash,
                g.user_id,
                g.client_id,
                g.client_name,
                g.redirect_uri,
                g.code_challenge,
                g.scopes,
                g.resource,
                micros(code.created_at),
                micros(code.expires_at),
            ])?;
            Ok(())
        })
        .await
    }

    pub(crate) async fn redeem_oauth_code(
        &self,
        code_hash: [u8; 32],
        now: OffsetDateTime,
    ) -> StoreResult<CodeRedemption> {
        self.write("redeeming an authorization code", move |tx| {
            let found = tx
                .prepare_cached(
                    "SELECT user_id, client_id, client_name, redirect_uri, code_challenge, scopes,
                            resource, expires_at, used_at IS NOT NULL, grant_id
                     FROM oauth_codes WHERE code_hash = ?1",
                )?
                .query_row([code_hash], |row| {
                    Ok((
                        OAuthCodeGrant {
                            user_id: row.get(0)?,
                            client_id: row.get(1)?,
                            client_name: row.get(2)?,
                            redirect_uri: row.get(3)?,
                            code_challenge: row.get(4)?,
                            scopes: row.get(5)?,
                            resource: row.get(6)?,
                        },
                        row.get::<_, i64>(7)?,
                        row.get::<_, bool>(8)?,
                        row.get::<_, Option<Uuid>>(9)?,
                    ))
                })
                .optional()?;
            let Some((grant, expires_at, used, grant_id)) = found else {
                return Ok(CodeRedemption::Unknown);
            };
            if used {
                return Ok(CodeRedemption::Reused { grant_id });
            }
            if expires_at <= micros(now) {
                return Ok(CodeRedemption::Unknown);
            }
            tx.prepare_cached("UPDATE oauth_codes SET used_at = ?2 WHERE code_hash = ?1")?
                .execute(params![code_hash, micros(now)])?;
            Ok(CodeRedemption::Fresh(grant))
        })
        .await
    }

    pub(crate) async fn insert_oauth_grant(
        &self,
        grant: &NewOAuthGrant,
        code_hash: [u8; 32],
    ) -> StoreResult<()> {
        let g = grant.clone();
        self.write("making an OAuth grant", move |tx| {
            tx.prepare_cached(
                "INSERT INTO oauth_grants
                     (id, user_id, client_id, client_name, scopes, resource, created_at, expires_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
            )?
            .execute(params![
                g.id,
                g.user_id,
                g.client_id,
                g.client_name,
                g.scopes,
                g.resource,
                micros(g.created_at),
                micros(g.expires_at),
            ])?;
            tx.prepare_cached(
                "INSERT INTO oauth_refresh_tokens (token_hash, grant_id, created_at, expires_at)
                 VALUES (?1, ?2, ?3, ?4)",
            )?
            .execute(params![
                g.refresh_hash,
                g.id,
                micros(g.created_at),
                micros(g.expires_at)
            ])?;
            tx.prepare_cached("UPDATE oauth_codes SET grant_id = ?2 WHERE code_hash = ?1")?
                .execute(params![code_hash, g.id])?;
            tx.prepare_cached(
                "UPDATE oauth_clients SET used_at = ?2 WHERE client_id = ?1 AND used_at IS NULL",
            )?
            .execute(params![g.client_id, micros(g.created_at)])?;
            bump_epoch(tx)?;
            Ok(())
        })
        .await
    }

    pub(crate) async fn rotate_oauth_refresh(
        &self,
        old_hash: [u8; 32],
        new_hash: [u8; 32],
        client_id: &str,
        now: OffsetDateTime,
        expires_at: OffsetDateTime,
    ) -> StoreResult<RefreshRotation> {
        let client_id = client_id.to_owned();
        self.write("rotating an OAuth refresh token", move |tx| {
            let found = tx
                .prepare_cached(&format!(
                    "SELECT {GRANT_COLUMNS}, r.used_at IS NOT NULL, r.expires_at, u.is_active
                     FROM oauth_refresh_tokens r
                     JOIN oauth_grants g ON g.id = r.grant_id
                     JOIN users u ON u.id = g.user_id
                     WHERE r.token_hash = ?1"
                ))?
                .query_row([old_hash], |row| {
                    Ok((
                        grant_at(row)?,
                        row.get::<_, bool>(9)?,
                        row.get::<_, i64>(10)?,
                        row.get::<_, bool>(11)?,
                    ))
                })
                .optional()?;
            let Some((grant, used, token_expires, active)) = found else {
                return Ok(RefreshRotation::Unknown);
            };
            if grant.client_id != client_id {
                return Ok(RefreshRotation::Unknown);
            }
            if used {
                delete_grant(tx, grant.id)?;
                return Ok(RefreshRotation::Reused {
                    grant_id: grant.id,
                    user_id: grant.user_id,
                });
            }
            if !active || token_expires <= micros(now) {
                return Ok(RefreshRotation::Unknown);
            }
            tx.prepare_cached(
                "UPDATE oauth_refresh_tokens SET used_at = ?2 WHERE token_hash = ?1",
            )?
            .execute(params![old_hash, micros(now)])?;
            tx.prepare_cached(
                "INSERT INTO oauth_refresh_tokens (token_hash, grant_id, created_at, expires_at)
                 VALUES (?1, ?2, ?3, ?4)",
            )?
            .execute(params![new_hash, grant.id, micros(now), micros(expires_at)])?;
            tx.prepare_cached("UPDATE oauth_grants SET expires_at = ?2 WHERE id = ?1")?
                .execute(params![grant.id, micros(expires_at)])?;
            Ok(RefreshRotation::Rotated(OAuthGrantRecord {
                expires_at,
                ..grant
            }))
        })
        .await
    }

    pub(crate) async fn grant_of_refresh(
        &self,
        token_hash: [u8; 32],
        now: OffsetDateTime,
    ) -> StoreResult<Option<OAuthGrantRecord>> {
        self.with_conn("finding a refresh token's grant", move |c| {
            c.prepare_cached(&format!(
                "SELECT {GRANT_COLUMNS}
                 FROM oauth_refresh_tokens r JOIN oauth_grants g ON g.id = r.grant_id
                 WHERE r.token_hash = ?1 AND r.expires_at > ?2"
            ))?
            .query_row(params![token_hash, micros(now)], grant_at)
            .optional()
        })
        .await
    }

    pub(crate) async fn list_oauth_grants(
        &self,
        user_id: Uuid,
        now: OffsetDateTime,
    ) -> StoreResult<Vec<OAuthGrantRecord>> {
        self.with_conn("listing OAuth grants", move |c| {
            c.prepare_cached(&format!(
                "SELECT {GRANT_COLUMNS} FROM oauth_grants g
                 WHERE g.user_id = ?1 AND g.expires_at > ?2
                 ORDER BY g.created_at DESC, g.id"
            ))?
            .query_map(params![user_id, micros(now)], grant_at)?
            .collect()
        })
        .await
    }

    pub(crate) async fn delete_oauth_grant(
        &self,
        user_id: Option<Uuid>,
        id: Uuid,
    ) -> StoreResult<bool> {
        self.write("deleting an OAuth grant", move |tx| {
            let owner: Option<Uuid> = tx
                .prepare_cached("SELECT user_id FROM oauth_grants WHERE id = ?1")?
                .query_row([id], |row| row.get(0))
                .optional()?;
            match owner {
                Some(owner) if user_id.is_none_or(|u| u == owner) => delete_grant(tx, id),
                _ => Ok(false),
            }
        })
        .await
    }

    pub(crate) async fn delete_oauth_grants_of(&self, user_id: Uuid) -> StoreResult<Vec<Uuid>> {
        self.write("ending a user's OAuth grants", move |tx| {
            let ids: Vec<Uuid> = tx
                .prepare_cached("DELETE FROM oauth_grants WHERE user_id = ?1 RETURNING id")?
                .query_map([user_id], |row| row.get(0))?
                .collect::<rusqlite::Result<_>>()?;
            if !ids.is_empty() {
                bump_epoch(tx)?;
            }
            Ok(ids)
        })
        .await
    }

    pub(crate) async fn live_oauth_grants(
        &self,
        now: OffsetDateTime,
    ) -> StoreResult<Vec<OAuthGrantRecord>> {
        self.with_conn("loading live OAuth grants", move |c| {
            c.prepare_cached(&format!(
                "SELECT {GRANT_COLUMNS}
                 FROM oauth_grants g JOIN users u ON u.id = g.user_id
                 WHERE u.is_active = 1 AND g.expires_at > ?1"
            ))?
            .query_map([micros(now)], grant_at)?
            .collect()
        })
        .await
    }

    pub(crate) async fn record_grant_use(
        &self,
        uses: &[(Uuid, OffsetDateTime)],
    ) -> StoreResult<()> {
        self.record_use("oauth_grants", "recording OAuth grant use", uses)
            .await
    }

    pub(crate) async fn purge_oauth(
        &self,
        now: OffsetDateTime,
        unused_before: OffsetDateTime,
    ) -> StoreResult<u64> {
        self.write("purging expired OAuth rows", move |tx| {
            let now = micros(now);
            let mut gone = 0;
            gone += tx
                .prepare_cached("DELETE FROM oauth_codes WHERE expires_at <= ?1")?
                .execute([now])?;
            gone += tx
                .prepare_cached("DELETE FROM oauth_refresh_tokens WHERE expires_at <= ?1")?
                .execute([now])?;
            let grants = tx
                .prepare_cached("DELETE FROM oauth_grants WHERE expires_at <= ?1")?
                .execute([now])?;
            if grants > 0 {
                bump_epoch(tx)?;
            }
            gone += grants;
            gone += tx
                .prepare_cached(
                    "DELETE FROM oauth_clients WHERE used_at IS NULL AND created_at <= ?1",
                )?
                .execute([micros(unused_before)])?;
            Ok(gone as u64)
        })
        .await
    }
}
