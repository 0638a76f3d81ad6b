//! The announcements of changes other replicas made: one connection of its own (outside the
//! pool) that `LISTEN`s on the channel `agentskills`, whose messages the triggers of `V0007` send
//! when a change commits (see that migration for what each payload means).
//!
//! The connection is made again whenever it fails, waiting a little longer each time (up to a
//! second); every time it is (re)made the receiver gets [`Announcement::Resync`] first, since
//! whatever was sent while it was away is lost: the receiver reads what it holds again. A query
//! every fifteen seconds finds a connection that died without a word (a network that dropped it).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use futures_util::StreamExt as _;
use tokio::sync::mpsc;
use tokio_postgres::{AsyncMessage, NoTls};
use uuid::Uuid;

use crate::store::Announcement;

/// The channel the triggers notify.
const CHANNEL: &str = "agentskills";
/// How often a quiet connection is checked with a query.
const CHECK_EVERY: Duration = Duration::from_secs(15);
/// How long that query may take before the connection is taken for dead.
const CHECK_TIMEOUT: Duration = Duration::from_secs(5);
const FIRST_BACKOFF: Duration = Duration::from_millis(100);
const MAX_BACKOFF: Duration = Duration::from_secs(1);

/// Whether the listening connection is up now (for `/health/ready`).
#[derive(Clone, Debug, Default)]
pub struct ListenerHealth {
    connected: Arc<AtomicBool>,
}

impl ListenerHealth {
    pub fn is_connected(&self) -> bool {
        self.connected.load(Ordering::Relaxed)
    }

    fn set(&self, connected: bool) {
        self.connected.store(connected, Ordering::Relaxed);
    }
}

/// Starts listening; stops when the receiver is dropped.
pub(crate) fn spawn(
    config: tokio_postgres::Config,
) -> (ListenerHealth, mpsc::UnboundedReceiver<Announcement>) {
    let (tx, rx) = mpsc::unbounded_channel();
    let health = ListenerHealth::default();
    tokio::spawn(run(config, tx, health.clone()));
    (health, rx)
}

async fn run(
    config: tokio_postgres::Config,
    out: mpsc::UnboundedSender<Announcement>,
    health: ListenerHealth,
) {
    let mut backoff = FIRST_BACKOFF;
    let mut failures = 0u32;
    while !out.is_closed() {
        match listen_once(&config, &out, &health).await {
            Ok(Ended::ReceiverGone) => return,
            Ok(Ended::Lost(why)) => {
                // It worked for a while: try again at once, then back off.
                backoff = FIRST_BACKOFF;
                failures = 0;
                tracing::warn!(why = %why, "the connection listening for other replicas' changes was lost; making it again");
            }
            Err(e) => {
                failures += 1;
                // Logged once, then every tenth failure: a database that is down says so elsewhere.
                if failures == 1 || failures.is_multiple_of(10) {
                    tracing::warn!(error = %e, failures, "cannot listen for other replicas' changes; will retry");
                }
            }
        }
        health.set(false);
        tokio::select! {
            () = tokio::time::sleep(backoff) => {}
            () = out.closed() => return,
        }
        backoff = (backoff * 2).min(MAX_BACKOFF);
    }
}

enum Ended {
    ReceiverGone,
    Lost(String),
}

async fn listen_once(
    config: &tokio_postgres::Config,
    out: &mpsc::UnboundedSender<Announcement>,
    health: &ListenerHealth,
) -> Result<Ended, tokio_postgres::Error> {
    let (client, mut connection) = config.connect(NoTls).await?;
    let (payloads, mut received) = mpsc::unbounded_channel::<Result<String, String>>();
    // The connection is driven by a task of its own, which hands the notifications over.
    let driver = tokio::spawn(async move {
        let mut messages = futures_util::stream::poll_fn(move |cx| connection.poll_message(cx));
        while let Some(message) = messages.next().await {
            let sent = match message {
                Ok(AsyncMessage::Notification(n)) => payloads.send(Ok(n.payload().to_owned())),
                Ok(_) => Ok(()),
                Err(e) => {
                    let _ = payloads.send(Err(e.to_string()));
                    return;
                }
            };
            if sent.is_err() {
                return;
            }
        }
        let _ = payloads.send(Err("the database closed the connection".to_owned()));
    });
    let ended = async {
        client.batch_execute(&format!("LISTEN {CHANNEL}")).await?;
        health.set(true);
        if out.send(Announcement::Resync).is_err() {
            return Ok(Ended::ReceiverGone);
        }
        let mut check = tokio::time::interval(CHECK_EVERY);
        check.tick().await;
        loop {
            tokio::select! {
                payload = received.recv() => match payload {
                    Some(Ok(payload)) => match parse(&payload) {
                        Some(announcement) => {
                            if out.send(announcement).is_err() {
                                return Ok(Ended::ReceiverGone);
                            }
                        }
                        None => tracing::warn!(payload = %payload, "ignored an announcement of an unknown form"),
                    },
                    Some(Err(why)) => return Ok(Ended::Lost(why)),
                    None => return Ok(Ended::Lost("the connection's task ended".to_owned())),
                },
                _ = check.tick() => {
                    match tokio::time::timeout(CHECK_TIMEOUT, client.simple_query("SELECT 1")).await {
                        Ok(Ok(_)) => {}
                        Ok(Err(e)) => return Ok(Ended::Lost(e.to_string())),
                        Err(_) => return Ok(Ended::Lost("the database did not answer a check in time".to_owned())),
                    }
                }
                () = out.closed() => return Ok(Ended::ReceiverGone),
            }
        }
    }
    .await;
    driver.abort();
    ended
}

/// Reads a payload of the triggers: `s <user> <version>`, `t <epoch>`, `d <user>`, `e <session>`.
fn parse(payload: &str) -> Option<Announcement> {
    let mut words = payload.split(' ');
    let announcement = match words.next()? {
        "s" => Announcement::Skills {
            user_id: Uuid::parse_str(words.next()?).ok()?,
            version: words.next()?.parse().ok()?,
        },
        "t" => {
            words.next()?.parse::<i64>().ok()?;
            Announcement::Tokens
        }
        "d" => Announcement::UserDeleted {
            user_id: Uuid::parse_str(words.next()?).ok()?,
        },
        "e" => Announcement::SessionEnded {
            id: words.next().filter(|id| !id.is_empty())?.to_owned(),
        },
        _ => return None,
    };
    words.next().is_none().then_some(announcement)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn payloads_are_read_strictly() {
        let user = Uuid::new_v4();
        assert_eq!(
            parse(&format!("s {user} 42")),
            Some(Announcement::Skills {
                user_id: user,
                version: 42
            })
        );
        assert_eq!(parse("t 7"), Some(Announcement::Tokens));
        assert_eq!(
            parse(&format!("d {user}")),
            Some(Announcement::UserDeleted { user_id: user })
        );
        assert_eq!(
            parse("e 0a1b"),
            Some(Announcement::SessionEnded { id: "0a1b".into() })
        );
        for bad in [
            "",
            "s",
            "s nonsense 1",
            &format!("s {user}"),
            &format!("s {user} x"),
            &format!("s {user} 1 extra"),
            "t",
            "t x",
            "x 1",
            &format!("d {user} 1"),
            "e",
            "e ",
            "e a b",
        ] {
            assert_eq!(parse(bad), None, "{bad:?}");
        }
    }
}
