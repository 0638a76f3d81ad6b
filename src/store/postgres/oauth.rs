//! OAuth clients, codes, grants and refresh tokens on PostgreSQL (`sql/postgres/V0006__oauth.sql`).
//!
//! Redeeming a code and rotating a refresh token lock their row (`FOR UPDATE`), so that two
//! presentations at once are told apart: one wins, the other is a reuse.

use deadpool_postgres::GenericClient;
use time::OffsetDateTime;
use tokio_postgres::Row;
use uuid::Uuid;

use super::{Fail, PgStore, bump_epoch, fail};
use crate::store::{
    CodeRedemption, NewOAuthCode, NewOAuthGrant, OAuthClientRecord, OAuthCodeGrant,
    OAuthGrantRecord, RefreshRotation, StoreResult,
};

const GRANT_COLUMNS: &str = "g.id, g.user_id, g.client_id, g.client_name, g.scopes, g.resource,
     g.created_at, g.last_used_at, g.expires_at";

fn grant_from_row(row: &Row) -> Result<OAuthGrantRecord, Fail> {
    Ok(OAuthGrantRecord {
        id: row.try_get(0)?,
        user_id: row.try_get(1)?,
        client_id: row.try_get(2)?,
        client_name: row.try_get(3)?,
        scopes: row.try_get(4)?,
        resource: row.try_get(5)?,
        created_at: row.try_get(6)?,
        last_used_at: row.try_get(7)?,
        expires_at: row.try_get(8)?,
    })
}

async fn delete_grant(
    tx: &deadpool_postgres::Transaction<'_>,
    id: Uuid,
) -> Result<bool, tokio_postgres::Error> {
    let stmt = tx
        .prepare_cached("DELETE FROM oauth_grants WHERE id = $1")
        .await?;
    let found = tx.execute(&stmt, &[&id]).await? > 0;
    if found {
        bump_epoch(tx).await?;
    }
    Ok(found)
}

impl PgStore {
    pub(crate) async fn insert_oauth_client(&self, client: &OAuthClientRecord) -> StoreResult<()> {
        let db = self.client().await?;
        let run = async {
            let stmt = db
                .prepare_cached(
                    "INSERT INTO oauth_clients
                         (client_id, client_name, redirect_uris, metadata, created_at, used_at)
                     VALUES ($1, $2, $3, $4, $5, $6)",
                )
                .await?;
            db.execute(
                &stmt,
                &[
                    &client.client_id,
                    &client.client_name,
                    &client.redirect_uris,
                    &client.metadata,
                    &client.created_at,
                    &client.used_at,
                ],
            )
            .await?;
            Ok(())
        };
        run.await.map_err(fail("registering an OAuth client"))
    }

    pub(crate) async fn oauth_client(
        &self,
        client_id: &str,
    ) -> StoreResult<Option<OAuthClientRecord>> {
        let db = self.client().await?;
        let run = async {
            let stmt = db
                .prepare_cached(
                    "SELECT client_id, client_name, redirect_uris, metadata, created_at, used_at
                     FROM oauth_clients WHERE client_id = $1",
                )
                .await?;
            db.query_opt(&stmt, &[&client_id])
                .await?
                .map(|row| {
                    Ok(OAuthClientRecord {
                        client_id: row.try_get(0)?,
                        client_name: row.try_get(1)?,
                        redirect_uris: row.try_get(2)?,
                        metadata: row.try_get(3)?,
                        created_at: row.try_get(4)?,
                        used_at: row.try_get(5)?,
                    })
                })
                .transpose()
        };
        run.await.map_err(fail("reading an OAuth client"))
    }

    pub(crate) async fn insert_oauth_code(&self, code: &NewOAuthCode) -> StoreResult<()> {
        let db = self.client().await?;
        let run = async {
            let g = &code.grant;
            let stmt = db
                .prepare_cached(
                    "INSERT INTO oauth_codes
                         (code_hash, user_id, client_id, client_name, redirect_uri, code_challenge,
                          scopes, resource, created_at, expires_at)
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
                )
                .await?;
            db.execute(
                &stmt,
                &[
                    &code.code_hash.as_slice(),
                    &g.user_id,
                    &g.client_id,
                    &g.client_name,
                    &g.redirect_uri,
                    &g.code_challenge,
                    &g.scopes,
                    &g.resource,
                    &code.created_at,
                    &code.expires_at,
                ],
            )
            .await?;
            Ok(())
        };
        run.await.map_err(fail("issuing an authorization code"))
    }

    pub(crate) async fn redeem_oauth_code(
        &self,
        code_hash: [u8; 32],
        now: OffsetDateTime,
    ) -> StoreResult<CodeRedemption> {
        let mut db = self.client().await?;
        let run = async {
            let tx = db.transaction().await?;
            let stmt = tx
                .prepare_cached(
                    "SELECT user_id, client_id, client_name, redirect_uri, code_challenge, scopes,
                            resource, expires_at, used_at IS NOT NULL, grant_id
                     FROM oauth_codes WHERE code_hash = $1 FOR UPDATE",
                )
                .await?;
            let Some(row) = tx.query_opt(&stmt, &[&code_hash.as_slice()]).await? else {
                return Ok(CodeRedemption::Unknown);
            };
            let grant = OAuthCodeGrant {
                user_id: row.try_get(0)?,
                client_id: row.try_get(1)?,
                client_name: row.try_get(2)?,
                redirect_uri: row.try_get(3)?,
                code_challenge: row.try_get(4)?,
                scopes: row.try_get(5)?,
                resource: row.try_get(6)?,
            };
            let expires_at: OffsetDateTime = row.try_get(7)?;
            let used: bool = row.try_get(8)?;
            if used {
                return Ok(CodeRedemption::Reused {
                    grant_id: row.try_get(9)?,
                });
            }
            if expires_at <= now {
                return Ok(CodeRedemption::Unknown);
            }
            let stmt = tx
                .prepare_cached("UPDATE oauth_codes SET used_at = $2 WHERE code_hash = $1")
                .await?;
            tx.execute(&stmt, &[&code_hash.as_slice(), &now]).await?;
            tx.commit().await?;
            Ok(CodeRedemption::Fresh(grant))
        };
        run.await.map_err(fail("redeeming an authorization code"))
    }

    pub(crate) async fn insert_oauth_grant(
        &self,
        g: &NewOAuthGrant,
        code_hash: [u8; 32],
    ) -> StoreResult<()> {
        let mut db = self.client().await?;
        let run = async {
            let tx = db.transaction().await?;
            let stmt = tx
                .prepare_cached(
                    "INSERT INTO oauth_grants
                         (id, user_id, client_id, client_name, scopes, resource, created_at,
                          expires_at)
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
                )
                .await?;
            tx.execute(
                &stmt,
                &[
                    &g.id,
                    &g.user_id,
                    &g.client_id,
                    &g.client_name,
                    &g.scopes,
                    &g.resource,
                    &g.created_at,
                    &g.expires_at,
                ],
            )
            .await?;
            let stmt = tx
                .prepare_cached(
                    "INSERT INTO oauth_refresh_tokens (token_hash, grant_id, created_at, expires_at)
                     VALUES ($1, $2, $3, $4)",
                )
                .await?;
            tx.execute(
                &stmt,
                &[
                    &g.refresh_hash.as_slice(),
                    &g.id,
                    &g.created_at,
                    &g.expires_at,
                ],
            )
            .await?;
            let stmt = tx
                .prepare_cached("UPDATE oauth_codes SET grant_id = $2 WHERE code_hash = $1")
                .await?;
            tx.execute(&stmt, &[&code_hash.as_slice(), &g.id]).await?;
            let stmt = tx
                .prepare_cached(
                    "UPDATE oauth_clients SET used_at = $2 WHERE client_id = $1 AND used_at IS NULL",
                )
                .await?;
            tx.execute(&stmt, &[&g.client_id, &g.created_at]).await?;
            bump_epoch(&tx).await?;
            tx.commit().await?;
            Ok(())
        };
        run.await.map_err(fail("making an OAuth grant"))
    }

    pub(crate) async fn rotate_oauth_refresh(
        &self,
        old_hash: [u8; 32],
        new_hash: [u8; 32],
        client_id: &str,
        now: OffsetDateTime,
        expires_at: OffsetDateTime,
    ) -> StoreResult<RefreshRotation> {
        let mut db = self.client().await?;
        let run = async {
            let tx = db.transaction().await?;
            let stmt = tx
                .prepare_cached(&format!(
                    "SELECT {GRANT_COLUMNS}, r.used_at IS NOT NULL, r.expires_at, u.is_active
                     FROM oauth_refresh_tokens r
                     JOIN oauth_grants g ON g.id = r.grant_id
                     JOIN users u ON u.id = g.user_id
                     WHERE r.token_hash = $1
                     FOR UPDATE OF r"
                ))
                .await?;
            let Some(row) = tx.query_opt(&stmt, &[&old_hash.as_slice()]).await? else {
                return Ok(RefreshRotation::Unknown);
            };
            let grant = grant_from_row(&row)?;
            let used: bool = row.try_get(9)?;
            let token_expires: OffsetDateTime = row.try_get(10)?;
            let active: bool = row.try_get(11)?;
            if grant.client_id != client_id {
                return Ok(RefreshRotation::Unknown);
            }
            if used {
                delete_grant(&tx, grant.id).await?;
                tx.commit().await?;
                return Ok(RefreshRotation::Reused {
                    grant_id: grant.id,
                    user_id: grant.user_id,
                });
            }
            if !active || token_expires <= now {
                return Ok(RefreshRotation::Unknown);
            }
            let stmt = tx
                .prepare_cached(
                    "UPDATE oauth_refresh_tokens SET used_at = $2 WHERE token_hash = $1",
                )
                .await?;
            tx.execute(&stmt, &[&old_hash.as_slice(), &now]).await?;
            let stmt = tx
                .prepare_cached(
                    "INSERT INTO oauth_refresh_tokens (token_hash, grant_id, created_at, expires_at)
                     VALUES ($1, $2, $3, $4)",
                )
                .await?;
            tx.execute(&stmt, &[&new_hash.as_slice(), &grant.id, &now, &expires_at])
                .await?;
            let stmt = tx
                .prepare_cached("UPDATE oauth_grants SET expires_at = $2 WHERE id = $1")
                .await?;
            tx.execute(&stmt, &[&grant.id, &expires_at]).await?;
            tx.commit().await?;
            Ok(RefreshRotation::Rotated(OAuthGrantRecord {
                expires_at,
                ..grant
            }))
        };
        run.await.map_err(fail("rotating an OAuth refresh token"))
    }

    pub(crate) async fn grant_of_refresh(
        &self,
        token_hash: [u8; 32],
        now: OffsetDateTime,
    ) -> StoreResult<Option<OAuthGrantRecord>> {
        let db = self.client().await?;
        let run = async {
            let stmt = db
                .prepare_cached(&format!(
                    "SELECT {GRANT_COLUMNS}
                     FROM oauth_refresh_tokens r JOIN oauth_grants g ON g.id = r.grant_id
                     WHERE r.token_hash = $1 AND r.expires_at > $2"
                ))
                .await?;
            db.query_opt(&stmt, &[&token_hash.as_slice(), &now])
                .await?
                .as_ref()
                .map(grant_from_row)
                .transpose()
        };
        run.await.map_err(fail("finding a refresh token's grant"))
    }

    pub(crate) async fn list_oauth_grants(
        &self,
        user_id: Uuid,
        now: OffsetDateTime,
    ) -> StoreResult<Vec<OAuthGrantRecord>> {
        let db = self.client().await?;
        let run = async {
            let stmt = db
                .prepare_cached(&format!(
                    "SELECT {GRANT_COLUMNS} FROM oauth_grants g
                     WHERE g.user_id = $1 AND g.expires_at > $2
                     ORDER BY g.created_at DESC, g.id"
                ))
                .await?;
            db.query(&stmt, &[&user_id, &now])
                .await?
                .iter()
                .map(grant_from_row)
                .collect::<Result<Vec<_>, Fail>>()
        };
        run.await.map_err(fail("listing OAuth grants"))
    }

    pub(crate) async fn delete_oauth_grant(
        &self,
        user_id: Option<Uuid>,
        id: Uuid,
    ) -> StoreResult<bool> {
        let mut db = self.client().await?;
        let run = async {
            let tx = db.transaction().await?;
            let stmt = tx
                .prepare_cached("SELECT user_id FROM oauth_grants WHERE id = $1 FOR UPDATE")
                .await?;
            let owner: Option<Uuid> = tx
                .query_opt(&stmt, &[&id])
                .await?
                .map(|row| row.try_get(0))
                .transpose()?;
            let found = match owner {
                Some(owner) if user_id.is_none_or(|u| u == owner) => delete_grant(&tx, id).await?,
                _ => false,
            };
            tx.commit().await?;
            Ok(found)
        };
        run.await.map_err(fail("deleting an OAuth grant"))
    }

    pub(crate) async fn delete_oauth_grants_of(&self, user_id: Uuid) -> StoreResult<Vec<Uuid>> {
        let mut db = self.client().await?;
        let run = async {
            let tx = db.transaction().await?;
            let stmt = tx
                .prepare_cached("DELETE FROM oauth_grants WHERE user_id = $1 RETURNING id")
                .await?;
            let ids = tx
                .query(&stmt, &[&user_id])
                .await?
                .iter()
                .map(|row| row.try_get(0))
                .collect::<Result<Vec<Uuid>, _>>()?;
            if !ids.is_empty() {
                bump_epoch(&tx).await?;
            }
            tx.commit().await?;
            Ok(ids)
        };
        run.await.map_err(fail("ending a user's OAuth grants"))
    }

    pub(crate) async fn live_oauth_grants(
        &self,
        now: OffsetDateTime,
    ) -> StoreResult<Vec<OAuthGrantRecord>> {
        let db = self.client().await?;
        let run = async {
            let stmt = db
                .prepare_cached(&format!(
                    "SELECT {GRANT_COLUMNS}
                     FROM oauth_grants g JOIN users u ON u.id = g.user_id
                     WHERE u.is_active AND g.expires_at > $1"
                ))
                .await?;
            db.query(&stmt, &[&now])
                .await?
                .iter()
                .map(grant_from_row)
                .collect::<Result<Vec<_>, Fail>>()
        };
        run.await.map_err(fail("loading live OAuth grants"))
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
        let mut db = self.client().await?;
        let run = async {
            let tx = db.transaction().await?;
            let mut gone = 0;
            for sql in [
                "DELETE FROM oauth_codes WHERE expires_at <= $1",
                "DELETE FROM oauth_refresh_tokens WHERE expires_at <= $1",
            ] {
                let stmt = tx.prepare_cached(sql).await?;
                gone += tx.execute(&stmt, &[&now]).await?;
            }
            let stmt = tx
                .prepare_cached("DELETE FROM oauth_grants WHERE expires_at <= $1")
                .await?;
            let grants = tx.execute(&stmt, &[&now]).await?;
            if grants > 0 {
                bump_epoch(&tx).await?;
            }
            gone += grants;
            let stmt = tx
                .prepare_cached(
                    "DELETE FROM oauth_clients WHERE used_at IS NULL AND created_at <= $1",
                )
                .await?;
            gone += tx.execute(&stmt, &[&unused_before]).await?;
            tx.commit().await?;
            Ok(gone)
        };
        run.await.map_err(fail("purging expired OAuth rows"))
    }
}
