//! Behaviour tests of both back ends, through [`Store`].
//!
//! Each test is an `async fn(Store)` run twice by `on_both_backends!`: on SQLite in a temporary
//! directory, and on PostgreSQL in a fresh database created for it when `TEST_DATABASE_URL` names a
//! server it may create databases on (without that variable the PostgreSQL variants pass at once).

use std::future::Future;
use std::path::Path;

use time::macros::datetime;
use time::{Duration, OffsetDateTime};
use tokio_postgres::NoTls;
use uuid::Uuid;

use super::*;

/// A fixed, deliberately non-round instant, so that every test is deterministic and a lost
/// microsecond would show.
const T0: OffsetDateTime = datetime!(2031-05-17 08:09:10.123_456 UTC);

macro_rules! on_both_backends {
    ($($name:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    super::on_sqlite(super::$name).await;
                }
            )*
        }
        mod postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    super::on_postgres(super::$name).await;
                }
            )*
        }
    };
}

on_both_backends!(
    migrations_are_idempotent,
    duplicate_email_and_username_are_reported_by_field,
    users_are_found_regardless_of_case_and_listed_oldest_first,
    timestamps_round_trip_exactly,
    delete_user_cascades_to_everything_the_user_owns,
    rotate_refresh_covers_every_outcome,
    concurrent_rotation_of_one_token_rotates_once,
    an_oauth_code_is_redeemed_once_even_by_racers,
    oauth_refresh_rotation_covers_every_outcome,
    set_password_revokes_sessions_and_bumps_version,
    end_all_sessions_and_deactivation_revoke_sessions,
    access_context_and_revoke_session,
    browser_sessions_follow_their_login_session_and_expire,
    purge_expired_removes_expired_tokens_and_empty_sessions,
    live_api_tokens_exclude_expired_tokens_and_inactive_users,
    api_token_limit_is_enforced,
    concurrent_api_token_inserts_respect_the_limit,
    registry_epoch_bumps_on_every_token_relevant_change,
    record_token_use_never_moves_backwards,
    skills_are_listed_by_name_then_id,
    skill_names_are_unique_per_user,
    update_skill_changes_only_what_is_given,
    delete_skill_deletes_only_the_owners_skill,
    write_skills_writes_all_or_nothing,
    every_skill_change_is_a_compare_and_set_of_the_skills_version,
    collection_removes_only_unreferenced_blobs_and_bumps_the_version,
    announcements_are_heard_on_postgres_only,
    mcp_sessions_keep_the_cap_and_are_reaped_when_idle,
    look_alike_emails_are_taken_unless_both_are_ascii,
    concurrent_look_alike_emails_let_one_in,
);

/// The back-fill of rows written before `V0002`: on a database migrated only that far.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_rows_from_before_the_skeleton_column_are_back_filled() {
    on_sqlite_with(rows_from_before_the_skeleton_column_are_back_filled, false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_rows_from_before_the_skeleton_column_are_back_filled() {
    on_postgres_with(rows_from_before_the_skeleton_column_are_back_filled, false).await;
}

/// The count of sessions per credential (`V0009`), on a database migrated only to `V0008`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_session_counts_are_back_filled() {
    on_sqlite_with(session_counts_are_back_filled, false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_session_counts_are_back_filled() {
    on_postgres_with(session_counts_are_back_filled, false).await;
}

fn settings(url: String) -> DatabaseSettings {
    DatabaseSettings {
        url: Some(url),
        max_connections: 8,
        connect_timeout_secs: 5,
        acquire_timeout_secs: 10,
    }
}

async fn on_sqlite<F, Fut>(test: F)
where
    F: FnOnce(Store) -> Fut,
    Fut: Future<Output = ()>,
{
    on_sqlite_with(test, true).await;
}

/// `migrated`: whether the store is opened as the service opens it, or left without any schema.
async fn on_sqlite_with<F, Fut>(test: F, migrated: bool)
where
    F: FnOnce(Store) -> Fut,
    Fut: Future<Output = ()>,
{
    let dir = tempfile::tempdir().unwrap();
    // The file's directory does not exist yet: opening must create it.
    let path = dir.path().join("nested").join("agentskills.db");
    let settings = settings(format!("sqlite:{}", path.display()));
    let store = if migrated {
        Store::open(&settings, dir.path()).await.unwrap()
    } else {
        Store::connect(&settings, dir.path()).await.unwrap()
    };
    assert_eq!(store.backend(), Backend::Sqlite);
    assert!(path.is_file());
    test(store).await;
}

async fn on_postgres<F, Fut>(test: F)
where
    F: FnOnce(Store) -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    on_postgres_with(test, true).await;
}

/// `migrated`: as for [`on_sqlite_with`].
async fn on_postgres_with<F, Fut>(test: F, migrated: bool)
where
    F: FnOnce(Store) -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    let Ok(admin_url) = std::env::var("TEST_DATABASE_URL") else {
        return;
    };
    let (admin, connection) = tokio_postgres::connect(&admin_url, NoTls).await.unwrap();
    let connection = tokio::spawn(connection);
    let name = format!("store_{}", Uuid::new_v4().simple());
    admin
        .batch_execute(&format!("CREATE DATABASE \"{name}\""))
        .await
        .unwrap();

    let settings = settings(with_database(&admin_url, &name));
    let opened = if migrated {
        Store::open(&settings, Path::new("unused")).await
    } else {
        Store::connect(&settings, Path::new("unused")).await
    };
    // On its own task, so that a failed assertion still lets the database be dropped below.
    let outcome = match opened {
        Ok(store) => {
            assert_eq!(store.backend(), Backend::Postgres);
            Ok(tokio::spawn(test(store)).await)
        }
        Err(e) => Err(e),
    };

    admin
        .batch_execute(&format!("DROP DATABASE \"{name}\" WITH (FORCE)"))
        .await
        .unwrap();
    drop(admin);
    connection.await.unwrap().unwrap();
    match outcome {
        Ok(Ok(())) => {}
        Ok(Err(failed)) => std::panic::resume_unwind(failed.into_panic()),
        Err(e) => panic!("opening the test database: {e:?}"),
    }
}

/// `postgres://user@host:port/db?opts` with `db` replaced by `name`.
fn with_database(url: &str, name: &str) -> String {
    let (scheme, rest) = url.split_once("://").unwrap();
    let authority = rest.split(['/', '?']).next().unwrap();
    let query = rest
        .split_once('?')
        .map(|(_, q)| format!("?{q}"))
        .unwrap_or_default();
    format!("{scheme}://{authority}/{name}{query}")
}

#[test]
fn database_names_are_replaced_in_urls() {
    assert_eq!(
        with_database("postgres://u@h:5432/test", "x"),
        "postgres://u@h:5432/x"
    );
    assert_eq!(
        with_database("postgres://u@h/test?sslmode=disable", "x"),
        "postgres://u@h/x?sslmode=disable"
    );
    assert_eq!(with_database("postgresql://h", "x"), "postgresql://h/x");
}

// ---- fixtures ----

fn new_user(username: &str, created_at: OffsetDateTime) -> NewUser {
    NewUser {
        id: Uuid::new_v4(),
        email: format!("{}@example.com", username.to_lowercase()),
        username: username.to_owned(),
        password_hash: format!("$scrypt$ln=4,r=8,p=1$salt${username}"),
        created_at,
    }
}

async fn add_user(store: &Store, username: &str) -> UserRecord {
    store.insert_user(&new_user(username, T0)).await.unwrap()
}

/// Starts a session whose first refresh token expires an hour after T0; returns (session, token).
async fn add_session(store: &Store, user_id: Uuid) -> (Uuid, Uuid) {
    let (session, token) = (Uuid::new_v4(), Uuid::new_v4());
    let refresh = NewRefreshToken {
        id: token,
        expires_at: T0 + Duration::hours(1),
    };
    store
        .insert_session(session, user_id, refresh, T0)
        .await
        .unwrap();
    (session, token)
}

fn new_token(
    user_id: Uuid,
    created_at: OffsetDateTime,
    expires_at: Option<OffsetDateTime>,
) -> NewApiToken {
    let mut token_hash = [0; 32];
    token_hash[..16].copy_from_slice(Uuid::new_v4().as_bytes());
    token_hash[16..].copy_from_slice(Uuid::new_v4().as_bytes());
    NewApiToken {
        id: Uuid::new_v4(),
        user_id,
        name: "laptop".to_owned(),
        prefix: "ask_live_0123".to_owned(),
        token_hash,
        created_at,
        expires_at,
        scopes: "skills:read".to_owned(),
    }
}

fn refresh(expires_at: OffsetDateTime) -> NewRefreshToken {
    NewRefreshToken {
        id: Uuid::new_v4(),
        expires_at,
    }
}

async fn count_rows(store: &Store, table: &'static str) -> i64 {
    match store {
        Store::Sqlite(s) => s.count_rows_for_test(table).await.unwrap(),
        Store::Postgres(s) => s.count_rows_for_test(table).await.unwrap(),
    }
}

/// A version of one file, `SKILL.md` with `content` (its digest made up from it).
fn version_of(content: &str) -> NewVersion {
    let sha256 = {
        use sha2::Digest as _;
        hex::encode(sha2::Sha256::digest(content.as_bytes()))
    };
    NewVersion {
        files: vec![VersionFile {
            path: "SKILL.md".to_owned(),
            sha256,
            size: content.len() as u64,
            executable: false,
        }],
        digest: format!("{:0>64}", content.len()),
        front_matter: "{}".to_owned(),
    }
}

fn new_skill(user_id: Uuid, name: &str, created_at: OffsetDateTime) -> NewSkill {
    NewSkill {
        id: Uuid::new_v4(),
        user_id,
        name: name.to_owned(),
        description: format!("What {name} does"),
        skill_dir: format!("{user_id}/{name}"),
        created_at,
    }
}

async fn add_skill(store: &Store, user_id: Uuid, name: &str) -> SkillRecord {
    store
        .insert_skill(&new_skill(user_id, name, T0), &version_of("v1"))
        .await
        .unwrap()
}

fn skill_names(skills: &[SkillRecord]) -> Vec<&str> {
    skills.iter().map(|s| s.name.as_str()).collect()
}

async fn is_revoked(store: &Store, user_id: Uuid, session_id: Uuid) -> bool {
    store
        .access_context(user_id, session_id)
        .await
        .unwrap()
        .unwrap()
        .1
}

// ---- tests ----

async fn migrations_are_idempotent(store: Store) {
    assert!(count_rows(&store, "refinery_schema_history").await >= 1);
    assert_eq!(store.migrate().await.unwrap(), 0);
    assert_eq!(store.migrate().await.unwrap(), 0);
    // The seed row of registry_epoch was not inserted twice.
    assert_eq!(count_rows(&store, "registry_epoch").await, 1);
    assert_eq!(store.registry_epoch().await.unwrap(), 0);
    store.ping().await.unwrap();
}

async fn duplicate_email_and_username_are_reported_by_field(store: Store) {
    let alice = add_user(&store, "Alice").await;

    let mut same_email = new_user("Alicia", T0);
    same_email.email = "ALICE@Example.COM".to_owned();
    let err = store.insert_user(&same_email).await.unwrap_err();
    assert!(
        matches!(err, StoreError::Duplicate(UniqueField::Email)),
        "{err:?}"
    );

    let mut same_name = new_user("aLiCe", T0);
    same_name.email = "other@example.com".to_owned();
    let err = store.insert_user(&same_name).await.unwrap_err();
    assert!(
        matches!(err, StoreError::Duplicate(UniqueField::Username)),
        "{err:?}"
    );

    // Renaming onto someone else's name or email is refused the same way.
    let bob = add_user(&store, "Bob").await;
    let err = store
        .update_profile(bob.id, None, Some("ALICE"), T0)
        .await
        .unwrap_err();
    assert!(
        matches!(err, StoreError::Duplicate(UniqueField::Username)),
        "{err:?}"
    );
    let err = store
        .update_profile(bob.id, Some("alice@example.com"), None, T0)
        .await
        .unwrap_err();
    assert!(
        matches!(err, StoreError::Duplicate(UniqueField::Email)),
        "{err:?}"
    );

    // Changing only the case of one's own username is allowed.
    let renamed = store
        .update_profile(alice.id, None, Some("ALICE"), T0)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(renamed.username, "ALICE");
    assert_eq!(store.list_users().await.unwrap().len(), 2);
}

async fn users_are_found_regardless_of_case_and_listed_oldest_first(store: Store) {
    let older = store
        .insert_user(&new_user("Zed", T0 - Duration::days(1)))
        .await
        .unwrap();
    let newer = add_user(&store, "Amy").await;
    assert!(newer.is_active);
    assert_eq!(newer.token_version, 0);
    assert_eq!(newer.created_at, T0);
    assert_eq!(newer.updated_at, T0);

    assert_eq!(
        store.user_by_email("AMY@EXAMPLE.COM").await.unwrap(),
        Some(newer.clone())
    );
    assert_eq!(
        store.user_by_username("amy").await.unwrap(),
        Some(newer.clone())
    );
    assert_eq!(
        store.user_by_id(newer.id).await.unwrap(),
        Some(newer.clone())
    );
    assert_eq!(store.user_by_id(Uuid::new_v4()).await.unwrap(), None);
    assert_eq!(
        store.user_by_email("nobody@example.com").await.unwrap(),
        None
    );
    assert_eq!(store.user_by_username("nobody").await.unwrap(), None);

    let ids: Vec<Uuid> = store
        .list_users()
        .await
        .unwrap()
        .iter()
        .map(|u| u.id)
        .collect();
    assert_eq!(ids, vec![older.id, newer.id]);

    let later = T0 + Duration::minutes(5);
    let updated = store
        .update_profile(newer.id, Some("amy@new.example"), None, later)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        (updated.email.as_str(), updated.username.as_str()),
        ("amy@new.example", "Amy")
    );
    assert_eq!(updated.updated_at, later);
    assert_eq!(updated.created_at, T0);
    // Nothing to change: the row, updated_at included, stays as it was.
    let same = store
        .update_profile(newer.id, None, None, later + Duration::minutes(1))
        .await
        .unwrap();
    assert_eq!(same, Some(updated));
    assert_eq!(
        store
            .update_profile(Uuid::new_v4(), Some("x@example.com"), None, later)
            .await
            .unwrap(),
        None
    );
}

async fn timestamps_round_trip_exactly(store: Store) {
    let instants = [
        T0,
        datetime!(1969-12-31 23:59:59.999_999 UTC),
        datetime!(2262-04-11 23:47:16.854_775 UTC),
        // Another offset: the same instant comes back (in UTC).
        datetime!(2031-05-17 10:09:10.000_001 +02:00),
        super::now(),
    ];
    for (i, at) in instants.into_iter().enumerate() {
        let user = store
            .insert_user(&new_user(&format!("time{i}"), at))
            .await
            .unwrap();
        assert_eq!(user.created_at, at);
        let read = store.user_by_id(user.id).await.unwrap().unwrap();
        assert_eq!((read.created_at, read.updated_at), (at, at));

        let token = new_token(user.id, at, Some(at + Duration::microseconds(1)));
        store.insert_api_token(&token, 10).await.unwrap();
        store.record_token_use(&[(token.id, at)]).await.unwrap();
        let listed = store.list_api_tokens(user.id, at).await.unwrap();
        assert_eq!(listed[0].created_at, at);
        assert_eq!(listed[0].expires_at, Some(at + Duration::microseconds(1)));
        assert_eq!(listed[0].last_used_at, Some(at));
        assert_eq!(listed[0].scopes, "skills:read");
        // Expiry is exact to the microsecond: live just before, dead at the instant.
        assert!(listed[0].is_active);
        let at_expiry = store
            .list_api_tokens(user.id, at + Duration::microseconds(1))
            .await
            .unwrap();
        assert!(!at_expiry[0].is_active);

        let skill = store
            .insert_skill(&new_skill(user.id, "pdf", at), &version_of("v1"))
            .await
            .unwrap();
        assert_eq!((skill.created_at, skill.updated_at), (at, at));
        let later = at + Duration::microseconds(1);
        let updated = store
            .update_skill(user.id, skill.id, None, None, later, None)
            .await
            .unwrap()
            .unwrap();
        assert_eq!((updated.created_at, updated.updated_at), (at, later));
        let listed = store.skills_of_user(user.id).await.unwrap();
        assert_eq!(listed, vec![updated]);
    }
}

async fn delete_user_cascades_to_everything_the_user_owns(store: Store) {
    let doomed = add_user(&store, "Doomed").await;
    let kept = add_user(&store, "Kept").await;
    for user in [&doomed, &kept] {
        let (_, token) = add_session(&store, user.id).await;
        let rotated = store
            .rotate_refresh(token, refresh(T0 + Duration::hours(1)), T0)
            .await
            .unwrap();
        assert!(matches!(rotated, RotateOutcome::Rotated { .. }));
        add_session(&store, user.id).await;
        store
            .insert_api_token(&new_token(user.id, T0, None), 10)
            .await
            .unwrap();
        add_skill(&store, user.id, "pdf").await;
        add_skill(&store, user.id, "xlsx").await;
    }
    let counts = store.account_counts(doomed.id, T0).await.unwrap();
    assert_eq!(
        counts,
        AccountCounts {
            skills: 2,
            tokens: 1
        }
    );
    let epoch = store.registry_epoch().await.unwrap();

    assert!(store.delete_user(doomed.id).await.unwrap());
    assert_eq!(store.registry_epoch().await.unwrap(), epoch + 1);
    assert_eq!(store.user_by_id(doomed.id).await.unwrap(), None);
    // Only the kept user's rows remain: 2 sessions, 3 refresh tokens, 1 API token, 2 skills.
    assert_eq!(count_rows(&store, "users").await, 1);
    assert_eq!(count_rows(&store, "auth_sessions").await, 2);
    assert_eq!(count_rows(&store, "refresh_tokens").await, 3);
    assert_eq!(count_rows(&store, "api_tokens").await, 1);
    assert_eq!(count_rows(&store, "skills").await, 2);
    assert!(store.skills_of_user(doomed.id).await.unwrap().is_empty());
    assert_eq!(
        skill_names(&store.skills_of_user(kept.id).await.unwrap()),
        ["pdf", "xlsx"]
    );
    assert_eq!(
        store.account_counts(doomed.id, T0).await.unwrap(),
        AccountCounts {
            skills: 0,
            tokens: 0
        }
    );
    assert_eq!(
        store.account_counts(kept.id, T0).await.unwrap(),
        AccountCounts {
            skills: 2,
            tokens: 1
        }
    );

    // Deleting again changes nothing, the epoch included.
    assert!(!store.delete_user(doomed.id).await.unwrap());
    assert_eq!(store.registry_epoch().await.unwrap(), epoch + 1);
}

async fn rotate_refresh_covers_every_outcome(store: Store) {
    let user = add_user(&store, "Rita").await;
    let (session, first) = add_session(&store, user.id).await;
    let later = T0 + Duration::minutes(1);

    // Never issued.
    let outcome = store
        .rotate_refresh(Uuid::new_v4(), refresh(later + Duration::hours(1)), later)
        .await
        .unwrap();
    assert_eq!(outcome, RotateOutcome::Unknown);

    // Fresh: rotated, and the new token belongs to the same session and can rotate in turn.
    let second = refresh(later + Duration::hours(1));
    let outcome = store.rotate_refresh(first, second, later).await.unwrap();
    assert_eq!(
        outcome,
        RotateOutcome::Rotated {
            session_id: session,
            user_id: user.id
        }
    );
    let third = refresh(later + Duration::hours(2));
    let outcome = store.rotate_refresh(second.id, third, later).await.unwrap();
    assert_eq!(
        outcome,
        RotateOutcome::Rotated {
            session_id: session,
            user_id: user.id
        }
    );
    assert!(!is_revoked(&store, user.id, session).await);

    // Used before: reuse, and the whole session is revoked; its newest token no longer works.
    let outcome = store
        .rotate_refresh(first, refresh(later + Duration::hours(1)), later)
        .await
        .unwrap();
    assert_eq!(
        outcome,
        RotateOutcome::Reused {
            session_id: session,
            user_id: user.id
        }
    );
    assert!(is_revoked(&store, user.id, session).await);
    let outcome = store
        .rotate_refresh(third.id, refresh(later + Duration::hours(3)), later)
        .await
        .unwrap();
    assert_eq!(outcome, RotateOutcome::SessionRevoked);
    // The refused attempts wrote nothing: first, second and third only.
    assert_eq!(count_rows(&store, "refresh_tokens").await, 3);

    // Expired (at exactly expires_at, too): unknown, and the session is left alone.
    let (session2, token) = add_session(&store, user.id).await;
    let expiry = T0 + Duration::hours(1);
    let outcome = store
        .rotate_refresh(token, refresh(expiry + Duration::hours(1)), expiry)
        .await
        .unwrap();
    assert_eq!(outcome, RotateOutcome::Unknown);
    assert!(!is_revoked(&store, user.id, session2).await);
    let just_before = expiry - Duration::microseconds(1);
    let outcome = store
        .rotate_refresh(token, refresh(expiry + Duration::hours(1)), just_before)
        .await
        .unwrap();
    assert_eq!(
        outcome,
        RotateOutcome::Rotated {
            session_id: session2,
            user_id: user.id
        }
    );
}

async fn concurrent_rotation_of_one_token_rotates_once(store: Store) {
    let user = add_user(&store, "Racer").await;
    for _ in 0..3 {
        let (session, token) = add_session(&store, user.id).await;
        let attempts: Vec<_> = (0..8)
            .map(|_| {
                let store = store.clone();
                tokio::spawn(async move {
                    store
                        .rotate_refresh(token, refresh(T0 + Duration::hours(2)), T0)
                        .await
                })
            })
            .collect();
        let mut rotated = 0;
        for attempt in attempts {
            match attempt.await.unwrap().unwrap() {
                RotateOutcome::Rotated { session_id, .. } => {
                    assert_eq!(session_id, session);
                    rotated += 1;
                }
                // The losers saw the token used (and revoked the session) or the session revoked.
                RotateOutcome::Reused { session_id, .. } => assert_eq!(session_id, session),
                RotateOutcome::SessionRevoked => {}
                RotateOutcome::Unknown => panic!("the token exists and is not expired"),
            }
        }
        assert_eq!(rotated, 1);
        assert!(is_revoked(&store, user.id, session).await);
    }
}

async fn set_password_revokes_sessions_and_bumps_version(store: Store) {
    let user = add_user(&store, "Pat").await;
    let other = add_user(&store, "Other").await;
    let (s1, _) = add_session(&store, user.id).await;
    let (s2, _) = add_session(&store, user.id).await;
    let (theirs, _) = add_session(&store, other.id).await;

    let later = T0 + Duration::minutes(3);
    assert!(
        store
            .set_password(user.id, "$scrypt$new", later)
            .await
            .unwrap()
    );
    let read = store.user_by_id(user.id).await.unwrap().unwrap();
    assert_eq!(read.password_hash, "$scrypt$new");
    assert_eq!(read.token_version, user.token_version + 1);
    assert_eq!(read.updated_at, later);
    assert!(is_revoked(&store, user.id, s1).await);
    assert!(is_revoked(&store, user.id, s2).await);
    assert!(!is_revoked(&store, other.id, theirs).await);
    assert!(
        !store
            .set_password(Uuid::new_v4(), "$scrypt$x", later)
            .await
            .unwrap()
    );

    // Re-hashing: only from the expected old hash, and sessions and version stay as they are.
    let (s3, _) = add_session(&store, user.id).await;
    assert!(
        !store
            .upgrade_password_hash(user.id, "$scrypt$stale", "$scrypt$v2")
            .await
            .unwrap()
    );
    assert!(
        store
            .upgrade_password_hash(user.id, "$scrypt$new", "$scrypt$v2")
            .await
            .unwrap()
    );
    let read = store.user_by_id(user.id).await.unwrap().unwrap();
    assert_eq!(read.password_hash, "$scrypt$v2");
    assert_eq!(read.token_version, user.token_version + 1);
    assert!(!is_revoked(&store, user.id, s3).await);
}

async fn end_all_sessions_and_deactivation_revoke_sessions(store: Store) {
    let user = add_user(&store, "Eve").await;
    let (s1, _) = add_session(&store, user.id).await;
    assert!(store.end_all_sessions(user.id, T0).await.unwrap());
    assert!(is_revoked(&store, user.id, s1).await);
    assert_eq!(
        store
            .user_by_id(user.id)
            .await
            .unwrap()
            .unwrap()
            .token_version,
        1
    );
    assert!(!store.end_all_sessions(Uuid::new_v4(), T0).await.unwrap());

    let (s2, _) = add_session(&store, user.id).await;
    assert!(store.set_active(user.id, false, T0).await.unwrap());
    let read = store.user_by_id(user.id).await.unwrap().unwrap();
    assert!(!read.is_active);
    assert_eq!(read.token_version, 2);
    assert!(is_revoked(&store, user.id, s2).await);

    // Reactivating does not bring sessions back, nor change the version.
    assert!(store.set_active(user.id, true, T0).await.unwrap());
    let read = store.user_by_id(user.id).await.unwrap().unwrap();
    assert!(read.is_active);
    assert_eq!(read.token_version, 2);
    assert!(is_revoked(&store, user.id, s2).await);
}

async fn access_context_and_revoke_session(store: Store) {
    let user = add_user(&store, "Ann").await;
    let other = add_user(&store, "Ben").await;
    let (session, _) = add_session(&store, user.id).await;
    let (theirs, _) = add_session(&store, other.id).await;

    let (read, revoked) = store
        .access_context(user.id, session)
        .await
        .unwrap()
        .unwrap();
    assert_eq!((read, revoked), (user.clone(), false));
    // A session that does not exist, or is someone else's, counts as revoked.
    assert!(is_revoked(&store, user.id, Uuid::new_v4()).await);
    assert!(is_revoked(&store, user.id, theirs).await);
    assert_eq!(
        store.access_context(Uuid::new_v4(), session).await.unwrap(),
        None
    );

    assert!(!store.revoke_session(user.id, theirs, T0).await.unwrap());
    assert!(!is_revoked(&store, other.id, theirs).await);
    assert!(store.revoke_session(user.id, session, T0).await.unwrap());
    assert!(is_revoked(&store, user.id, session).await);
    assert!(!store.revoke_session(user.id, session, T0).await.unwrap());
}

async fn purge_expired_removes_expired_tokens_and_empty_sessions(store: Store) {
    let user = add_user(&store, "Pia").await;
    // Session A: its first token is used and the second one lives two hours.
    let (a, first) = add_session(&store, user.id).await;
    store
        .rotate_refresh(first, refresh(T0 + Duration::hours(2)), T0)
        .await
        .unwrap();
    // Session B: its only token expires after an hour.
    let (b, _) = add_session(&store, user.id).await;

    assert_eq!(store.purge_expired(T0).await.unwrap(), 0);
    // After the hour: A's first token and B's token, then B itself.
    assert_eq!(
        store.purge_expired(T0 + Duration::hours(1)).await.unwrap(),
        3
    );
    assert!(!is_revoked(&store, user.id, a).await);
    assert!(is_revoked(&store, user.id, b).await);
    assert_eq!(count_rows(&store, "auth_sessions").await, 1);
    assert_eq!(count_rows(&store, "refresh_tokens").await, 1);
    assert_eq!(
        store.purge_expired(T0 + Duration::hours(3)).await.unwrap(),
        2
    );
    assert_eq!(count_rows(&store, "auth_sessions").await, 0);
}

async fn browser_sessions_follow_their_login_session_and_expire(store: Store) {
    let user = add_user(&store, "Bea").await;
    let new = |hash: u8, expires_at| NewBrowserSession {
        id_hash: [hash; 32],
        session_id: Uuid::new_v4(),
        user_id: user.id,
        token_version: user.token_version,
        expires_at,
    };
    let kept = new(1, T0 + Duration::hours(2));
    let short = new(2, T0 + Duration::hours(1));
    for session in [&kept, &short] {
        store.insert_browser_session(session, T0).await.unwrap();
    }
    let read = store.browser_session([1; 32]).await.unwrap().unwrap();
    assert_eq!(read.user, user);
    assert_eq!(read.session_id, kept.session_id);
    assert_eq!(read.token_version, user.token_version);
    assert_eq!(read.expires_at, kept.expires_at);
    assert!(!read.revoked);
    assert!(store.browser_session([9; 32]).await.unwrap().is_none());

    // Revoking the login session shows on the browser session.
    assert!(
        store
            .revoke_session(user.id, kept.session_id, T0)
            .await
            .unwrap()
    );
    assert!(
        store
            .browser_session([1; 32])
            .await
            .unwrap()
            .unwrap()
            .revoked
    );

    // A login session with a live browser session is not "empty": the purge keeps both until
    // the browser session expires, then removes it and its login session.
    assert_eq!(store.purge_expired(T0).await.unwrap(), 0);
    assert_eq!(
        store.purge_expired(T0 + Duration::hours(1)).await.unwrap(),
        2
    );
    assert!(store.browser_session([2; 32]).await.unwrap().is_none());
    assert!(store.browser_session([1; 32]).await.unwrap().is_some());

    assert!(store.delete_browser_session([1; 32]).await.unwrap());
    assert!(!store.delete_browser_session([1; 32]).await.unwrap());
    assert_eq!(count_rows(&store, "browser_sessions").await, 0);

    // Deleting the user takes its browser sessions with it.
    store
        .insert_browser_session(&new(3, T0 + Duration::days(1)), T0)
        .await
        .unwrap();
    assert!(store.delete_user(user.id).await.unwrap());
    assert_eq!(count_rows(&store, "browser_sessions").await, 0);
}

async fn live_api_tokens_exclude_expired_tokens_and_inactive_users(store: Store) {
    let active = add_user(&store, "Active").await;
    let inactive = add_user(&store, "Inactive").await;
    let forever = new_token(active.id, T0, None);
    let later = new_token(
        active.id,
        T0 + Duration::seconds(1),
        Some(T0 + Duration::days(1)),
    );
    let expired = new_token(active.id, T0 + Duration::seconds(2), Some(T0));
    let of_inactive = new_token(inactive.id, T0, None);
    for token in [&forever, &later, &expired, &of_inactive] {
        store.insert_api_token(token, 10).await.unwrap();
    }
    assert!(store.set_active(inactive.id, false, T0).await.unwrap());

    let mut live = store.live_api_tokens(T0).await.unwrap();
    live.sort_by_key(|t| t.id);
    let mut expected = vec![
        LiveApiToken {
            id: forever.id,
            user_id: active.id,
            token_hash: forever.token_hash,
            expires_at: None,
            scopes: "skills:read".to_owned(),
        },
        LiveApiToken {
            id: later.id,
            user_id: active.id,
            token_hash: later.token_hash,
            expires_at: later.expires_at,
            scopes: "skills:read".to_owned(),
        },
    ];
    expected.sort_by_key(|t| t.id);
    assert_eq!(live, expected);
    // A day on, only the token without expiry is left.
    let live = store.live_api_tokens(T0 + Duration::days(1)).await.unwrap();
    assert_eq!(
        live.iter().map(|t| t.id).collect::<Vec<_>>(),
        vec![forever.id]
    );

    // Listing: newest first, expired ones shown as inactive, no hash anywhere.
    let listed = store.list_api_tokens(active.id, T0).await.unwrap();
    let summary: Vec<(Uuid, bool)> = listed.iter().map(|t| (t.id, t.is_active)).collect();
    assert_eq!(
        summary,
        vec![(expired.id, false), (later.id, true), (forever.id, true)]
    );
    assert_eq!(listed[1].name, "laptop");
    assert_eq!(listed[1].prefix, "ask_live_0123");
    assert_eq!(listed[1].user_id, active.id);
    assert_eq!(listed[1].last_used_at, None);
    assert_eq!(
        store.account_counts(active.id, T0).await.unwrap(),
        AccountCounts {
            skills: 0,
            tokens: 2
        }
    );
    assert!(
        store
            .list_api_tokens(Uuid::new_v4(), T0)
            .await
            .unwrap()
            .is_empty()
    );

    // Reactivated, the user's token is live again.
    assert!(store.set_active(inactive.id, true, T0).await.unwrap());
    assert_eq!(store.live_api_tokens(T0).await.unwrap().len(), 3);
}

async fn api_token_limit_is_enforced(store: Store) {
    let user = add_user(&store, "Lim").await;
    let other = add_user(&store, "Other").await;
    store
        .insert_api_token(&new_token(user.id, T0, None), 2)
        .await
        .unwrap();
    // Expired at T0: listed until deleted, but it works no more, so it does not count.
    let expired = new_token(user.id, T0, Some(T0));
    store.insert_api_token(&expired, 2).await.unwrap();
    let second = new_token(user.id, T0, None);
    store.insert_api_token(&second, 2).await.unwrap();
    assert_eq!(store.list_api_tokens(user.id, T0).await.unwrap().len(), 3);
    let epoch = store.registry_epoch().await.unwrap();
    let err = store
        .insert_api_token(&new_token(user.id, T0, None), 2)
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::LimitReached), "{err:?}");
    assert_eq!(store.registry_epoch().await.unwrap(), epoch);
    // The limit is per user.
    store
        .insert_api_token(&new_token(other.id, T0, None), 2)
        .await
        .unwrap();
    // One that expires later counts until then.
    let later = T0 + Duration::days(1);
    assert!(store.delete_api_token(user.id, second.id).await.unwrap());
    store
        .insert_api_token(&new_token(user.id, T0, Some(later)), 2)
        .await
        .unwrap();
    let err = store
        .insert_api_token(&new_token(user.id, T0, None), 2)
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::LimitReached), "{err:?}");
    store
        .insert_api_token(&new_token(user.id, later, None), 2)
        .await
        .unwrap();
    let err = store
        .insert_api_token(&new_token(user.id, T0, None), 0)
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::LimitReached), "{err:?}");
}

async fn concurrent_api_token_inserts_respect_the_limit(store: Store) {
    let user = add_user(&store, "Many").await;
    let inserts: Vec<_> = (0..8)
        .map(|_| {
            let store = store.clone();
            let token = new_token(user.id, T0, None);
            tokio::spawn(async move { store.insert_api_token(&token, 3).await })
        })
        .collect();
    let mut ok = 0;
    for insert in inserts {
        match insert.await.unwrap() {
            Ok(()) => ok += 1,
            Err(StoreError::LimitReached) => {}
            Err(e) => panic!("{e:?}"),
        }
    }
    assert_eq!(ok, 3);
    assert_eq!(store.list_api_tokens(user.id, T0).await.unwrap().len(), 3);
    assert_eq!(store.registry_epoch().await.unwrap(), 3);
}

async fn registry_epoch_bumps_on_every_token_relevant_change(store: Store) {
    let user = add_user(&store, "Epoch").await;
    let other = add_user(&store, "Other").await;
    let missing = Uuid::new_v4();
    assert_eq!(store.registry_epoch().await.unwrap(), 0);

    let token = new_token(user.id, T0, None);
    store.insert_api_token(&token, 10).await.unwrap();
    assert_eq!(store.registry_epoch().await.unwrap(), 1);
    // Someone else's token, or none: nothing deleted, no bump.
    assert!(!store.delete_api_token(other.id, token.id).await.unwrap());
    assert!(!store.delete_api_token(user.id, missing).await.unwrap());
    assert_eq!(store.registry_epoch().await.unwrap(), 1);
    assert!(store.delete_api_token(user.id, token.id).await.unwrap());
    assert_eq!(store.registry_epoch().await.unwrap(), 2);

    assert!(store.set_active(user.id, false, T0).await.unwrap());
    assert_eq!(store.registry_epoch().await.unwrap(), 3);
    assert!(store.set_active(user.id, true, T0).await.unwrap());
    assert_eq!(store.registry_epoch().await.unwrap(), 4);
    assert!(!store.set_active(missing, false, T0).await.unwrap());
    assert!(!store.set_active(missing, true, T0).await.unwrap());
    assert_eq!(store.registry_epoch().await.unwrap(), 4);

    // Changes that cannot affect API tokens leave it alone.
    store
        .set_password(user.id, "$scrypt$other", T0)
        .await
        .unwrap();
    store.end_all_sessions(user.id, T0).await.unwrap();
    store
        .update_profile(user.id, Some("epoch@new.example"), None, T0)
        .await
        .unwrap();
    assert_eq!(store.registry_epoch().await.unwrap(), 4);

    assert!(store.delete_user(user.id).await.unwrap());
    assert_eq!(store.registry_epoch().await.unwrap(), 5);
    assert!(!store.delete_user(user.id).await.unwrap());
    assert_eq!(store.registry_epoch().await.unwrap(), 5);
}

async fn record_token_use_never_moves_backwards(store: Store) {
    let user = add_user(&store, "User").await;
    let a = new_token(user.id, T0, None);
    let b = new_token(user.id, T0 + Duration::seconds(1), None);
    store.insert_api_token(&a, 10).await.unwrap();
    store.insert_api_token(&b, 10).await.unwrap();
    let user_id = user.id;
    let last_used = move |store: Store| async move {
        let mut listed = store.list_api_tokens(user_id, T0).await.unwrap();
        listed.sort_by_key(|t| t.created_at);
        listed.iter().map(|t| t.last_used_at).collect::<Vec<_>>()
    };

    // Nothing to write: fine, and nothing changes.
    store.record_token_use(&[]).await.unwrap();
    assert_eq!(last_used(store.clone()).await, vec![None, None]);

    let t = |secs: i64| T0 + Duration::seconds(secs);
    // The same token twice in one batch, out of order, and an unknown id: the latest use wins.
    store
        .record_token_use(&[
            (a.id, t(20)),
            (Uuid::new_v4(), t(99)),
            (a.id, t(10)),
            (b.id, t(5)),
        ])
        .await
        .unwrap();
    assert_eq!(
        last_used(store.clone()).await,
        vec![Some(t(20)), Some(t(5))]
    );

    // An older use arriving late does not move it back; a newer one moves it on.
    store
        .record_token_use(&[(a.id, t(15)), (b.id, t(6))])
        .await
        .unwrap();
    assert_eq!(
        last_used(store.clone()).await,
        vec![Some(t(20)), Some(t(6))]
    );
    store
        .record_token_use(&[(a.id, t(20) + Duration::microseconds(1))])
        .await
        .unwrap();
    assert_eq!(
        last_used(store.clone()).await,
        vec![Some(t(20) + Duration::microseconds(1)), Some(t(6))]
    );
}

async fn skills_are_listed_by_name_then_id(store: Store) {
    let user = add_user(&store, "Sky").await;
    let other = add_user(&store, "Other").await;
    assert!(store.skills_of_user(user.id).await.unwrap().is_empty());

    let skill = new_skill(user.id, "xlsx", T0);
    let inserted = store.insert_skill(&skill, &version_of("v1")).await.unwrap();
    assert_eq!(
        inserted,
        SkillRecord {
            id: skill.id,
            user_id: user.id,
            name: "xlsx".to_owned(),
            description: "What xlsx does".to_owned(),
            skill_dir: format!("{}/xlsx", user.id),
            is_active: true,
            created_at: T0,
            updated_at: T0,
            version: 1,
        }
    );
    // Inserted out of order and at different times: listed by name, by bytes on both back ends
    // (upper case before lower case, non-ASCII last), whatever the creation times.
    for (i, name) in ["pdf", "Zeta", "\u{e9}criture", "alpha", "docx"]
        .into_iter()
        .enumerate()
    {
        let at = T0 - Duration::minutes(i as i64);
        store
            .insert_skill(&new_skill(user.id, name, at), &version_of("v1"))
            .await
            .unwrap();
    }
    add_skill(&store, other.id, "aaa").await;

    let listed = store.skills_of_user(user.id).await.unwrap();
    assert_eq!(
        skill_names(&listed),
        ["Zeta", "alpha", "docx", "pdf", "xlsx", "\u{e9}criture"]
    );
    assert!(listed.iter().all(|s| s.user_id == user.id));
    assert_eq!(listed[4], inserted);
    assert_eq!(
        skill_names(&store.skills_of_user(other.id).await.unwrap()),
        ["aaa"]
    );
    assert!(
        store
            .skills_of_user(Uuid::new_v4())
            .await
            .unwrap()
            .is_empty()
    );
    assert_eq!(store.account_counts(user.id, T0).await.unwrap().skills, 6);
}

async fn skill_names_are_unique_per_user(store: Store) {
    let user = add_user(&store, "Una").await;
    let other = add_user(&store, "Otto").await;
    let first = add_skill(&store, user.id, "pdf").await;

    // Another id, the same name: refused, and the first row is untouched.
    let err = store
        .insert_skill(
            &new_skill(user.id, "pdf", T0 + Duration::minutes(1)),
            &version_of("v1"),
        )
        .await
        .unwrap_err();
    assert!(
        matches!(err, StoreError::Duplicate(UniqueField::SkillName)),
        "{err:?}"
    );
    assert_eq!(err.to_string(), "skill name is already taken");
    assert_eq!(store.skills_of_user(user.id).await.unwrap(), vec![first]);

    // Another user may use the name.
    let theirs = add_skill(&store, other.id, "pdf").await;
    assert_eq!(store.skills_of_user(other.id).await.unwrap(), vec![theirs]);
    assert_eq!(count_rows(&store, "skills").await, 2);
}

async fn update_skill_changes_only_what_is_given(store: Store) {
    let user = add_user(&store, "Upd").await;
    let other = add_user(&store, "Other").await;
    let skill = add_skill(&store, user.id, "pdf").await;
    let neighbour = add_skill(&store, user.id, "xlsx").await;
    let t = |mins: i64| T0 + Duration::minutes(mins);

    let described = store
        .update_skill(user.id, skill.id, Some("Reads PDFs"), None, t(1), None)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        described,
        SkillRecord {
            description: "Reads PDFs".to_owned(),
            updated_at: t(1),
            ..skill.clone()
        }
    );

    let deactivated = store
        .update_skill(user.id, skill.id, None, Some(false), t(2), None)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        deactivated,
        SkillRecord {
            is_active: false,
            updated_at: t(2),
            ..described.clone()
        }
    );

    let both = store
        .update_skill(user.id, skill.id, Some(""), Some(true), t(3), None)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        both,
        SkillRecord {
            description: String::new(),
            is_active: true,
            updated_at: t(3),
            ..skill.clone()
        }
    );

    // Nothing given: only updated_at moves.
    let touched = store
        .update_skill(user.id, skill.id, None, None, t(4), None)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        touched,
        SkillRecord {
            updated_at: t(4),
            ..both.clone()
        }
    );

    // Someone else's skill id, or an unknown one: nothing found, nothing changed.
    assert_eq!(
        store
            .update_skill(
                other.id,
                skill.id,
                Some("hijacked"),
                Some(false),
                t(5),
                None
            )
            .await
            .unwrap(),
        None
    );
    assert_eq!(
        store
            .update_skill(user.id, Uuid::new_v4(), Some("x"), None, t(5), None)
            .await
            .unwrap(),
        None
    );
    assert_eq!(
        store.skills_of_user(user.id).await.unwrap(),
        vec![touched, neighbour]
    );
}

async fn delete_skill_deletes_only_the_owners_skill(store: Store) {
    let owner = add_user(&store, "Owner").await;
    let other = add_user(&store, "Other").await;
    let skill = add_skill(&store, owner.id, "pdf").await;
    let kept = add_skill(&store, owner.id, "xlsx").await;
    let theirs = add_skill(&store, other.id, "pdf").await;

    assert!(!store.delete_skill(other.id, skill.id, None).await.unwrap());
    assert!(!store.delete_skill(owner.id, theirs.id, None).await.unwrap());
    assert!(
        !store
            .delete_skill(owner.id, Uuid::new_v4(), None)
            .await
            .unwrap()
    );
    assert_eq!(count_rows(&store, "skills").await, 3);

    assert!(store.delete_skill(owner.id, skill.id, None).await.unwrap());
    assert!(!store.delete_skill(owner.id, skill.id, None).await.unwrap());
    assert_eq!(store.skills_of_user(owner.id).await.unwrap(), vec![kept]);
    assert_eq!(store.skills_of_user(other.id).await.unwrap(), vec![theirs]);
    assert_eq!(store.account_counts(owner.id, T0).await.unwrap().skills, 1);

    // The name is free again.
    add_skill(&store, owner.id, "pdf").await;
    // Deleting a skill is not a token-relevant change.
    assert_eq!(store.registry_epoch().await.unwrap(), 0);
}

/// Several skills' rows (an archive of skills) in one transaction: all written, or, when one
/// cannot be (a name taken, a skill gone), none.
async fn write_skills_writes_all_or_nothing(store: Store) {
    let owner = add_user(&store, "Owner").await;
    let other = add_user(&store, "Other").await;
    let pdf = add_skill(&store, owner.id, "pdf").await;
    let theirs = add_skill(&store, other.id, "docx").await;
    let t1 = T0 + Duration::seconds(5);
    let written = store
        .write_skills(
            owner.id,
            &[
                SkillWrite::Insert(new_skill(owner.id, "alpha", t1), version_of("new")),
                SkillWrite::Update {
                    id: pdf.id,
                    description: "New.".into(),
                    is_active: Some(false),
                    version: version_of("pdf v2"),
                },
                SkillWrite::Insert(new_skill(owner.id, "beta", t1), version_of("new")),
            ],
            t1,
            20,
            None,
        )
        .await
        .unwrap()
        .unwrap();
    assert_eq!(skill_names(&written), ["alpha", "pdf", "beta"]);
    assert_eq!(written[1].description, "New.");
    assert!(!written[1].is_active);
    assert_eq!((written[1].created_at, written[1].updated_at), (T0, t1));
    assert_eq!(store.skills_of_user(owner.id).await.unwrap().len(), 3);

    let before = store.skills_of_user(owner.id).await.unwrap();
    // A name taken: nothing written, the first insert and the update included.
    let taken = store
        .write_skills(
            owner.id,
            &[
                SkillWrite::Insert(new_skill(owner.id, "gamma", t1), version_of("new")),
                SkillWrite::Update {
                    id: pdf.id,
                    description: "Newer.".into(),
                    is_active: None,
                    version: version_of("pdf v3"),
                },
                SkillWrite::Insert(new_skill(owner.id, "alpha", t1), version_of("new")),
            ],
            t1,
            20,
            None,
        )
        .await;
    assert!(
        matches!(taken, Err(StoreError::Duplicate(UniqueField::SkillName))),
        "{taken:?}"
    );
    assert_eq!(store.skills_of_user(owner.id).await.unwrap(), before);
    // Another user's skill, or one gone, is not updated, and nothing else is written.
    for id in [theirs.id, Uuid::new_v4()] {
        let gone = store
            .write_skills(
                owner.id,
                &[
                    SkillWrite::Insert(new_skill(owner.id, "delta", t1), version_of("new")),
                    SkillWrite::Update {
                        id,
                        description: "x".into(),
                        is_active: None,
                        version: version_of("x"),
                    },
                ],
                t1,
                20,
                None,
            )
            .await
            .unwrap();
        assert!(gone.is_none());
        assert_eq!(store.skills_of_user(owner.id).await.unwrap(), before);
    }
    assert_eq!(store.skills_of_user(other.id).await.unwrap(), vec![theirs]);
}

async fn look_alike_emails_are_taken_unless_both_are_ascii(store: Store) {
    let ann = add_user(&store, "ann").await;
    let bob = add_user(&store, "bob").await;
    let taken = |result: StoreResult<UserRecord>| {
        assert!(
            matches!(result, Err(StoreError::Duplicate(UniqueField::Email))),
            "{result:?}"
        );
    };
    // Cyrillic а; Latin alpha (one script, but not ASCII); an invisible character.
    for (n, look_alike) in [
        "\u{430}nn@example.com",
        "\u{251}nn@example.com",
        "a\u{200b}nn@example.com",
    ]
    .into_iter()
    .enumerate()
    {
        taken(
            store
                .insert_user(&with_email_for_test(&format!("mallory{n}"), look_alike))
                .await,
        );
        assert!(store.email_taken(look_alike, None).await.unwrap());
        // A user's own address is no obstacle to them.
        assert!(!store.email_taken(look_alike, Some(ann.id)).await.unwrap());
    }
    assert!(store.email_taken("ann@example.com", None).await.unwrap());
    assert!(
        !store
            .email_taken("ann@example.com", Some(ann.id))
            .await
            .unwrap()
    );
    assert!(!store.email_taken("anne@example.com", None).await.unwrap());

    // Two ASCII addresses that TS #39 calls confusable are two mailboxes: both are let in. A
    // non-ASCII look-alike of either (a Ukrainian і) is not, though they differ from each other.
    store
        .insert_user(&with_email_for_test("bill", "bill@example.com"))
        .await
        .unwrap();
    store
        .insert_user(&with_email_for_test("bi1l", "bi1l@example.com"))
        .await
        .unwrap();
    taken(
        store
            .insert_user(&with_email_for_test("bjll", "b\u{456}ll@example.com"))
            .await,
    );
    // A single-script address in another script is nobody's look-alike, and is then unique.
    let ivan =
        "\u{438}\u{432}\u{430}\u{43d}@\u{43f}\u{440}\u{438}\u{43c}\u{435}\u{440}.\u{440}\u{444}";
    store
        .insert_user(&with_email_for_test("ivan", ivan))
        .await
        .unwrap();
    taken(store.insert_user(&with_email_for_test("ivan2", ivan)).await);
    assert_eq!(count_rows(&store, "users").await, 5);

    // Changing an address follows the same rule; a refused change changes nothing.
    assert!(matches!(
        store
            .update_profile(
                bob.id,
                Some("\u{430}nn@example.com"),
                Some("bobby"),
                T0 + Duration::seconds(1)
            )
            .await,
        Err(StoreError::Duplicate(UniqueField::Email))
    ));
    assert_eq!(store.user_by_id(bob.id).await.unwrap(), Some(bob.clone()));
    let changed = store
        .update_profile(
            ann.id,
            Some("\u{430}nn@example.com"),
            None,
            T0 + Duration::seconds(1),
        )
        .await
        .unwrap()
        .unwrap();
    assert_eq!(changed.email, "\u{430}nn@example.com");
    // Its skeleton moved with it: the Latin spelling is now a look-alike of Ann's new address,
    // and a username-only change keeps both.
    assert!(
        store
            .email_taken("ann@example.com", Some(bob.id))
            .await
            .unwrap()
    );
    store
        .update_profile(ann.id, None, Some("ann2"), T0 + Duration::seconds(2))
        .await
        .unwrap();
    assert!(
        store
            .email_taken("ann@example.com", Some(bob.id))
            .await
            .unwrap()
    );
    let moved = store
        .update_profile(
            bob.id,
            Some("bob.new@example.com"),
            None,
            T0 + Duration::seconds(3),
        )
        .await
        .unwrap()
        .unwrap();
    assert_eq!(moved.email, "bob.new@example.com");
    assert!(!store.email_taken("bob@example.com", None).await.unwrap());
}

async fn concurrent_look_alike_emails_let_one_in(store: Store) {
    for round in 0..20 {
        // Latin x and Cyrillic х, written at the same moment.
        let latin = with_email_for_test(&format!("latin{round}"), &format!("x{round}@example.com"));
        let cyrillic = with_email_for_test(
            &format!("cyrillic{round}"),
            &format!("\u{445}{round}@example.com"),
        );
        let (a, b) = tokio::join!(store.insert_user(&latin), store.insert_user(&cyrillic));
        let refused = [&a, &b]
            .iter()
            .filter(|r| matches!(r, Err(StoreError::Duplicate(UniqueField::Email))))
            .count();
        assert!(
            refused == 1 && (a.is_ok() || b.is_ok()),
            "round {round}: {a:?} {b:?}"
        );
    }
    assert_eq!(count_rows(&store, "users").await, 20);
}

fn with_email_for_test(username: &str, email: &str) -> NewUser {
    NewUser {
        email: email.to_owned(),
        ..new_user(username, T0)
    }
}

async fn rows_from_before_the_skeleton_column_are_back_filled(store: Store) {
    match &store {
        Store::Sqlite(s) => s.migrate_to_for_test(1).await.unwrap(),
        Store::Postgres(s) => s.migrate_to_for_test(1).await.unwrap(),
    }
    // Rows as earlier releases wrote them: emails lower-cased, not NFKC, and look-alikes let in.
    let rows = [
        ("cy", "cy@example.com"),
        ("ann", "ann@example.com"),
        // Cyrillic а: a look-alike of Ann's, kept.
        ("anna", "\u{430}nn@example.com"),
        // Full-width b: becomes bob@example.com.
        ("bob", "\u{ff42}ob@example.com"),
        // NFD: becomes NFC.
        ("renee", "rene\u{301}e@example.com"),
        // Full-width c: its normal form is cy's, so it keeps its spelling.
        ("cy2", "\u{ff43}y@example.com"),
    ];
    let mut ids = std::collections::HashMap::new();
    for (i, (username, email)) in rows.into_iter().enumerate() {
        let id = Uuid::new_v4();
        let at = T0 + Duration::seconds(i64::try_from(i).unwrap());
        match &store {
            Store::Sqlite(s) => s.insert_v1_user_for_test(id, email, username, at).await,
            Store::Postgres(s) => s.insert_v1_user_for_test(id, email, username, at).await,
        }
        .unwrap();
        ids.insert(username, id);
    }

    // The rest of the migrations (V0002 and every later one), and the back-fill.
    assert!(store.migrate().await.unwrap() >= 1);
    assert_eq!(store.migrate().await.unwrap(), 0);
    assert_eq!(
        count_rows(&store, "users WHERE email_skeleton IS NULL").await,
        0
    );
    let by_email = |email: &'static str| {
        let store = store.clone();
        async move { store.user_by_email(email).await.unwrap().map(|u| u.id) }
    };
    assert_eq!(by_email("bob@example.com").await, Some(ids["bob"]));
    assert_eq!(by_email("ren\u{e9}e@example.com").await, Some(ids["renee"]));
    assert_eq!(by_email("cy@example.com").await, Some(ids["cy"]));
    assert_eq!(by_email("\u{ff43}y@example.com").await, Some(ids["cy2"]));
    assert_eq!(by_email("\u{430}nn@example.com").await, Some(ids["anna"]));
    // Every back-filled row takes part in the look-alike rule.
    for look_alike in [
        "\u{251}nn@example.com",
        "\u{15af}ob@example.com",
        "r\u{435}n\u{e9}e@example.com",
        "\u{441}y@example.com",
    ] {
        assert!(
            store.email_taken(look_alike, None).await.unwrap(),
            "{look_alike:?}"
        );
    }
    // Done once: a second start finds nothing to do and changes nothing.
    let before = store.list_users().await.unwrap();
    assert_eq!(store.migrate().await.unwrap(), 0);
    assert_eq!(store.list_users().await.unwrap(), before);
}

// ---- failures ----

#[tokio::test]
async fn opening_what_cannot_be_opened_is_a_setup_error() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("a-file");
    std::fs::write(&file, b"").unwrap();
    // The database's directory would have to be created inside a regular file.
    let url = format!("sqlite:{}", file.join("agentskills.db").display());
    let err = Store::open(&settings(url), dir.path()).await.unwrap_err();
    assert!(matches!(err, StoreError::Setup { .. }), "{err:?}");

    // Nothing listens on port 1.
    let err = Store::open(
        &settings("postgres://postgres@127.0.0.1:1/none".to_owned()),
        dir.path(),
    )
    .await
    .unwrap_err();
    assert!(matches!(err, StoreError::Setup { .. }), "{err:?}");
    assert!(!err.to_string().contains("postgres://"), "{err}");
}

#[tokio::test]
async fn a_database_that_went_away_is_unavailable() {
    let Ok(admin_url) = std::env::var("TEST_DATABASE_URL") else {
        return;
    };
    let (admin, connection) = tokio_postgres::connect(&admin_url, NoTls).await.unwrap();
    let connection = tokio::spawn(connection);
    let name = format!("store_{}", Uuid::new_v4().simple());
    admin
        .batch_execute(&format!("CREATE DATABASE \"{name}\""))
        .await
        .unwrap();
    let store = Store::open(
        &settings(with_database(&admin_url, &name)),
        Path::new("unused"),
    )
    .await
    .unwrap();
    store.ping().await.unwrap();

    // Ends the pooled connections too; new ones are refused since the database no longer exists.
    admin
        .batch_execute(&format!("DROP DATABASE \"{name}\" WITH (FORCE)"))
        .await
        .unwrap();
    for _ in 0..2 {
        let err = store.user_by_id(Uuid::new_v4()).await.unwrap_err();
        assert!(matches!(err, StoreError::Unavailable(_)), "{err:?}");
    }
    drop(admin);
    connection.await.unwrap().unwrap();
}

fn code_grant(user_id: Uuid) -> OAuthCodeGrant {
    OAuthCodeGrant {
        user_id,
        client_id: "ask_client_1".into(),
        client_name: "App".into(),
        redirect_uri: "http://127.0.0.1:1/cb".into(),
        code_challenge: "c".repeat(43),
        scopes: "skills:read skills:run".into(),
        resource: "http://127.0.0.1:8000/mcp".into(),
    }
}

fn new_grant(user_id: Uuid, refresh_hash: [u8; 32]) -> NewOAuthGrant {
    NewOAuthGrant {
        id: Uuid::new_v4(),
        user_id,
        client_id: "ask_client_1".into(),
        client_name: "App".into(),
        scopes: "skills:read".into(),
        resource: "http://127.0.0.1:8000/mcp".into(),
        created_at: T0,
        expires_at: T0 + Duration::days(30),
        refresh_hash,
    }
}

async fn an_oauth_code_is_redeemed_once_even_by_racers(store: Store) {
    let user = add_user(&store, "Coder").await;
    for round in 0u8..3 {
        let hash = [round + 1; 32];
        store
            .insert_oauth_code(&NewOAuthCode {
                code_hash: hash,
                grant: code_grant(user.id),
                created_at: T0,
                expires_at: T0 + Duration::minutes(1),
            })
            .await
            .unwrap();
        let attempts: Vec<_> = (0..8)
            .map(|_| {
                let store = store.clone();
                tokio::spawn(async move { store.redeem_oauth_code(hash, T0).await })
            })
            .collect();
        let mut fresh = 0;
        for attempt in attempts {
            match attempt.await.unwrap().unwrap() {
                CodeRedemption::Fresh(grant) => {
                    assert_eq!(grant, code_grant(user.id));
                    fresh += 1;
                }
                CodeRedemption::Reused { grant_id } => assert_eq!(grant_id, None),
                CodeRedemption::Unknown => panic!("the code exists and is not expired"),
            }
        }
        assert_eq!(fresh, 1, "round {round}");
    }
    // The grant a code made is named by its reuse; an expired code is unknown.
    let grant = new_grant(user.id, [9; 32]);
    store.insert_oauth_grant(&grant, [1; 32]).await.unwrap();
    assert_eq!(
        store.redeem_oauth_code([1; 32], T0).await.unwrap(),
        CodeRedemption::Reused {
            grant_id: Some(grant.id)
        }
    );
    store
        .insert_oauth_code(&NewOAuthCode {
            code_hash: [7; 32],
            grant: code_grant(user.id),
            created_at: T0,
            expires_at: T0 + Duration::minutes(1),
        })
        .await
        .unwrap();
    let late = T0 + Duration::minutes(1);
    assert_eq!(
        store.redeem_oauth_code([7; 32], late).await.unwrap(),
        CodeRedemption::Unknown
    );
    assert_eq!(
        store.redeem_oauth_code([8; 32], T0).await.unwrap(),
        CodeRedemption::Unknown
    );
}

async fn oauth_refresh_rotation_covers_every_outcome(store: Store) {
    let user = add_user(&store, "Refresher").await;
    let grant = new_grant(user.id, [1; 32]);
    store.insert_oauth_grant(&grant, [0; 32]).await.unwrap();
    let later = T0 + Duration::hours(1);
    let until = later + Duration::days(30);
    // Another client's token, or an unknown one: nothing happens.
    assert_eq!(
        store
            .rotate_oauth_refresh([1; 32], [2; 32], "ask_client_other", later, until)
            .await
            .unwrap(),
        RefreshRotation::Unknown
    );
    assert_eq!(
        store
            .rotate_oauth_refresh([5; 32], [2; 32], "ask_client_1", later, until)
            .await
            .unwrap(),
        RefreshRotation::Unknown
    );
    // Rotated: the grant lives on to the new expiry, and is listed and live.
    match store
        .rotate_oauth_refresh([1; 32], [2; 32], "ask_client_1", later, until)
        .await
        .unwrap()
    {
        RefreshRotation::Rotated(g) => {
            assert_eq!(
                (g.id, g.expires_at, g.scopes.as_str()),
                (grant.id, until, "skills:read")
            );
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(
        store.list_oauth_grants(user.id, later).await.unwrap().len(),
        1
    );
    assert_eq!(store.live_oauth_grants(later).await.unwrap().len(), 1);
    assert_eq!(
        store
            .grant_of_refresh([2; 32], later)
            .await
            .unwrap()
            .map(|g| g.id),
        Some(grant.id)
    );
    // Racers on the new token: one rotates, the others see it used, which ends the grant.
    let attempts: Vec<_> = (0..6u8)
        .map(|i| {
            let store = store.clone();
            tokio::spawn(async move {
                store
                    .rotate_oauth_refresh([2; 32], [10 + i; 32], "ask_client_1", later, until)
                    .await
            })
        })
        .collect();
    let mut rotated = 0;
    for attempt in attempts {
        match attempt.await.unwrap().unwrap() {
            RefreshRotation::Rotated(_) => rotated += 1,
            RefreshRotation::Reused { grant_id, user_id } => {
                assert_eq!((grant_id, user_id), (grant.id, user.id));
            }
            RefreshRotation::Unknown => {}
        }
    }
    assert_eq!(rotated, 1);
    assert!(
        store
            .list_oauth_grants(user.id, later)
            .await
            .unwrap()
            .is_empty()
    );
    assert!(store.live_oauth_grants(later).await.unwrap().is_empty());
    // Purge: expired rows and unused registrations go.
    store
        .insert_oauth_client(&OAuthClientRecord {
            client_id: "ask_client_unused".into(),
            client_name: "Unused".into(),
            redirect_uris: "[]".into(),
            metadata: "{}".into(),
            created_at: T0,
            used_at: None,
        })
        .await
        .unwrap();
    let gone = store
        .purge_oauth(T0 + Duration::days(90), T0 + Duration::days(1))
        .await
        .unwrap();
    assert!(gone >= 1);
    assert!(
        store
            .oauth_client("ask_client_unused")
            .await
            .unwrap()
            .is_none()
    );
}

async fn every_skill_change_is_a_compare_and_set_of_the_skills_version(store: Store) {
    let ann = add_user(&store, "Ann").await;
    let bob = add_user(&store, "Bob").await;
    assert_eq!(store.skills_version(ann.id).await.unwrap(), Some(0));
    assert_eq!(store.skills_version(Uuid::new_v4()).await.unwrap(), None);
    let t1 = T0 + Duration::seconds(1);
    let insert = |name: &str| {
        [SkillWrite::Insert(
            new_skill(ann.id, name, t1),
            version_of(name),
        )]
    };
    store
        .write_skills(ann.id, &insert("pdf"), t1, 20, Some(0))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(store.skills_version(ann.id).await.unwrap(), Some(1));
    // A writer that read version 0 is too late: nothing of its change is written.
    let stale = store
        .write_skills(ann.id, &insert("docx"), t1, 20, Some(0))
        .await;
    assert!(matches!(stale, Err(StoreError::Stale)), "{stale:?}");
    assert_eq!(
        skill_names(&store.skills_of_user(ann.id).await.unwrap()),
        ["pdf"]
    );
    let pdf = store.skills_of_user(ann.id).await.unwrap().remove(0);
    let stale = store
        .update_skill(ann.id, pdf.id, Some("Changed."), None, t1, Some(0))
        .await;
    assert!(matches!(stale, Err(StoreError::Stale)), "{stale:?}");
    let stale = store.delete_skill(ann.id, pdf.id, Some(0)).await;
    assert!(matches!(stale, Err(StoreError::Stale)), "{stale:?}");
    assert_eq!(
        store.skills_of_user(ann.id).await.unwrap(),
        std::slice::from_ref(&pdf)
    );
    assert_eq!(store.skills_version(ann.id).await.unwrap(), Some(1));
    // From the right version each goes through and bumps it; a change that finds no skill
    // writes nothing, the bump included.
    let updated = store
        .update_skill(ann.id, pdf.id, Some("Changed."), None, t1, Some(1))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(updated.description, "Changed.");
    assert_eq!(store.skills_version(ann.id).await.unwrap(), Some(2));
    let none = store
        .update_skill(ann.id, Uuid::new_v4(), Some("x"), None, t1, Some(2))
        .await
        .unwrap();
    assert_eq!(none, None);
    assert!(
        !store
            .delete_skill(ann.id, Uuid::new_v4(), Some(2))
            .await
            .unwrap()
    );
    assert_eq!(store.skills_version(ann.id).await.unwrap(), Some(2));
    assert!(store.delete_skill(ann.id, pdf.id, Some(2)).await.unwrap());
    assert_eq!(store.skills_version(ann.id).await.unwrap(), Some(3));
    // Without an expected version (repairs at load) the bump is unconditional.
    store
        .write_skills(ann.id, &insert("xlsx"), t1, 20, None)
        .await
        .unwrap()
        .unwrap();
    let mut versions = store
        .skills_versions(&[ann.id, bob.id, Uuid::new_v4()])
        .await
        .unwrap();
    versions.sort();
    let mut want = vec![(ann.id, 4), (bob.id, 0)];
    want.sort();
    assert_eq!(versions, want);
}

async fn collection_removes_only_unreferenced_blobs_and_bumps_the_version(store: Store) {
    let ann = add_user(&store, "Ann").await;
    let pdf = add_skill(&store, ann.id, "pdf").await;
    let version = store.skills_version(ann.id).await.unwrap().unwrap();
    // Nothing to collect: nothing written, `remove` never called.
    let collected = store
        .collect_blobs(ann.id, version, |_| async { panic!("nothing to remove") })
        .await
        .unwrap();
    assert_eq!(
        collected,
        Collected {
            removed: Vec::new(),
            version
        }
    );
    let kept: Vec<String> = store.blobs_of(ann.id).await.unwrap();
    // A new version of the only skill: the first version's blob is no one's now (keep = 1).
    let t1 = T0 + Duration::seconds(1);
    let write = [SkillWrite::Update {
        id: pdf.id,
        description: "v2".into(),
        is_active: None,
        version: version_of("v2"),
    }];
    store
        .write_skills(ann.id, &write, t1, 1, Some(version))
        .await
        .unwrap()
        .unwrap();
    let version = version + 1;
    let unreferenced = store.unreferenced_blobs(ann.id).await.unwrap();
    assert_eq!(
        unreferenced
            .iter()
            .map(|(sha, _)| sha.clone())
            .collect::<Vec<_>>(),
        kept
    );
    let stale = store
        .collect_blobs(ann.id, version - 1, |_| async { panic!("stale") })
        .await;
    assert!(matches!(stale, Err(StoreError::Stale)), "{stale:?}");
    let handed = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let seen = std::sync::Arc::clone(&handed);
    let collected = store
        .collect_blobs(ann.id, version, move |blobs| async move {
            seen.lock().unwrap().extend(blobs.clone());
            blobs
        })
        .await
        .unwrap();
    assert_eq!(*handed.lock().unwrap(), unreferenced);
    assert_eq!(
        collected,
        Collected {
            removed: unreferenced,
            version: version + 1
        }
    );
    assert!(store.unreferenced_blobs(ann.id).await.unwrap().is_empty());
    assert_eq!(store.blobs_of(ann.id).await.unwrap().len(), 1);
    assert_eq!(
        store.skills_version(ann.id).await.unwrap(),
        Some(version + 1)
    );
}

async fn next(heard: &mut tokio::sync::mpsc::UnboundedReceiver<Announcement>) -> Announcement {
    tokio::time::timeout(std::time::Duration::from_secs(10), heard.recv())
        .await
        .expect("an announcement within ten seconds")
        .expect("the listener runs")
}

async fn announcements_are_heard_on_postgres_only(store: Store) {
    let Some((health, mut heard)) = store.listen() else {
        assert_eq!(store.backend(), Backend::Sqlite);
        return;
    };
    assert_eq!(store.backend(), Backend::Postgres);
    // The connection is made: whatever was said before it is lost, so read again.
    assert_eq!(next(&mut heard).await, Announcement::Resync);
    assert!(health.is_connected());
    let ann = add_user(&store, "Ann").await;
    add_skill(&store, ann.id, "pdf").await;
    assert_eq!(
        next(&mut heard).await,
        Announcement::Skills {
            user_id: ann.id,
            version: 1
        }
    );
    // A change that is rolled back says nothing: the next announcement is the next change.
    let stale = store.delete_skill(ann.id, Uuid::new_v4(), Some(1)).await;
    assert!(matches!(stale, Ok(false)), "{stale:?}");
    store
        .set_active(ann.id, false, T0 + Duration::seconds(1))
        .await
        .unwrap();
    assert_eq!(next(&mut heard).await, Announcement::Tokens);
    assert!(store.delete_user(ann.id).await.unwrap());
    // The deletion's two announcements, in the order of the statements that made them.
    let mut got = vec![next(&mut heard).await, next(&mut heard).await];
    got.sort_by_key(|a| format!("{a:?}"));
    assert_eq!(
        got,
        [
            Announcement::Tokens,
            Announcement::UserDeleted { user_id: ann.id }
        ]
    );
}

async fn mcp_sessions_keep_the_cap_and_are_reaped_when_idle(store: Store) {
    let ann = add_user(&store, "Ann").await;
    let token = Uuid::new_v4();
    let other = Uuid::new_v4();
    let session = |id: &str, token_id: Uuid, at: OffsetDateTime| McpSessionRecord {
        id: id.to_owned(),
        user_id: ann.id,
        token_id,
        scopes: "skills:read".to_owned(),
        protocol_version: "2025-06-18".to_owned(),
        client_capabilities: r#"{"roots":{}}"#.to_owned(),
        created_at: at,
        last_seen_at: at,
    };
    let t = |s: i64| T0 + Duration::seconds(s);
    for (id, at) in [("a", 1), ("b", 2)] {
        let evicted = store
            .insert_mcp_session(&session(id, token, t(at)), 2)
            .await
            .unwrap();
        assert!(evicted.is_empty());
    }
    store
        .insert_mcp_session(&session("x", other, t(0)), 2)
        .await
        .unwrap();
    assert_eq!(
        store.mcp_session("a").await.unwrap(),
        Some(session("a", token, t(1)))
    );
    // "a" was used after "b": at the cap, "b" makes room, and only this token's sessions count.
    store
        .touch_mcp_sessions(&[("a".to_owned(), t(5)), ("a".to_owned(), t(4))])
        .await
        .unwrap();
    // A time never moves backwards.
    store
        .touch_mcp_sessions(&[("a".to_owned(), t(3))])
        .await
        .unwrap();
    assert_eq!(
        store.mcp_session("a").await.unwrap().unwrap().last_seen_at,
        t(5)
    );
    let evicted = store
        .insert_mcp_session(&session("c", token, t(6)), 2)
        .await
        .unwrap();
    assert_eq!(evicted, ["b"]);
    assert_eq!(store.mcp_session("b").await.unwrap(), None);
    assert!(store.mcp_session("x").await.unwrap().is_some());
    assert!(store.delete_mcp_session("c").await.unwrap());
    assert!(!store.delete_mcp_session("c").await.unwrap());
    // Idle: last used before the cutoff.
    assert_eq!(store.reap_mcp_sessions(t(5)).await.unwrap(), 1);
    assert_eq!(store.mcp_session("x").await.unwrap(), None);
    assert!(store.mcp_session("a").await.unwrap().is_some());
    // The counts followed every insert, eviction, end and reaping: the token holds "a" alone, so
    // "d" fits, and "e" makes room by "a" (used last at 5, before "d").
    assert_eq!(count_rows(&store, "mcp_session_counts").await, 1);
    assert_eq!(
        count_rows(&store, "mcp_session_counts WHERE held = 1").await,
        1
    );
    let evicted = store
        .insert_mcp_session(&session("d", token, t(7)), 2)
        .await
        .unwrap();
    assert!(evicted.is_empty(), "{evicted:?}");
    let evicted = store
        .insert_mcp_session(&session("e", token, t(8)), 2)
        .await
        .unwrap();
    assert_eq!(evicted, ["a"]);
    // The account's sessions go with it, and so do their counts.
    assert!(store.delete_user(ann.id).await.unwrap());
    assert_eq!(store.mcp_session("d").await.unwrap(), None);
    assert_eq!(count_rows(&store, "mcp_session_counts").await, 0);
    // A token starts again from nothing: were the deleted sessions still counted, the second of
    // these would make room by the first.
    let bob = add_user(&store, "Bob").await;
    for id in ["f", "g"] {
        let record = McpSessionRecord {
            user_id: bob.id,
            ..session(id, token, t(9))
        };
        let evicted = store.insert_mcp_session(&record, 2).await.unwrap();
        assert!(evicted.is_empty(), "{id}: {evicted:?}");
    }
}

/// Sessions recorded before `V0009` are counted by it.
async fn session_counts_are_back_filled(store: Store) {
    match &store {
        Store::Sqlite(s) => s.migrate_to_for_test(8).await.unwrap(),
        Store::Postgres(s) => s.migrate_to_for_test(8).await.unwrap(),
    }
    let ann = add_user(&store, "Ann").await;
    let token = Uuid::new_v4();
    for id in ["a", "b", "c"] {
        let row = McpSessionRecord {
            id: id.to_owned(),
            user_id: ann.id,
            token_id: token,
            scopes: "skills:read".to_owned(),
            protocol_version: "2025-06-18".to_owned(),
            client_capabilities: "{}".to_owned(),
            created_at: T0,
            last_seen_at: T0,
        };
        match &store {
            Store::Sqlite(s) => s.insert_v8_session_for_test(&row).await,
            Store::Postgres(s) => s.insert_v8_session_for_test(&row).await,
        }
        .unwrap();
    }
    assert!(store.migrate().await.unwrap() >= 1);
    assert_eq!(
        count_rows(&store, "mcp_session_counts WHERE held = 3").await,
        1
    );
    // At a cap of 3, a fourth makes room by one of the three.
    let fourth = McpSessionRecord {
        id: "d".to_owned(),
        user_id: ann.id,
        token_id: token,
        scopes: "skills:read".to_owned(),
        protocol_version: "2025-06-18".to_owned(),
        client_capabilities: "{}".to_owned(),
        created_at: T0 + Duration::seconds(1),
        last_seen_at: T0 + Duration::seconds(1),
    };
    assert_eq!(store.insert_mcp_session(&fourth, 3).await.unwrap(), ["a"]);
}
