//! Password hashing with scrypt, bounded so that a flood of logins cannot exhaust memory or cores.
//!
//! Hashes are PHC strings (`$scrypt$ln=17,r=8,p=1$<salt>$<hash>`), so each carries its own
//! parameters and older ones keep verifying after the settings change. Every hash runs on a thread
//! of its own behind a semaphore of `auth.hash_concurrency` permits; a caller that cannot get a
//! permit within `auth.hash_wait_ms` gets [`HashError::Busy`] (503 with `Retry-After`) instead of
//! queueing without bound. At the default cost one hash needs 128 MiB, so the permits also cap memory.
//!
//! Hashing threads run at a lower CPU priority ([`HASH_NICE`]): on a machine with few cores, a
//! flood of logins then takes the cores only when requests leave them free, and MCP calls keep
//! their latency. A lone login on an idle machine is as fast as before.

use std::sync::Arc;
use std::time::Duration;

use scrypt::password_hash::{
    self as password_hash, Output, PasswordHash, PasswordHasher as _, PasswordVerifier as _,
    SaltString,
};
use scrypt::{Params, Scrypt};
use tokio::sync::{OnceCell, Semaphore};

use crate::domain::Password;

/// The nice value of hashing threads: under contention, a thread at nice 10 gets about a tenth
/// of the CPU share of one at 0 (the kernel's weights 110 vs 1024).
pub const HASH_NICE: i32 = 10;

#[derive(Debug, thiserror::Error)]
pub enum HashError {
    #[error("every password-hashing slot is busy")]
    Busy(Duration),
    #[error("password hashing failed: {0}")]
    Failed(String),
}

#[derive(Debug)]
pub struct PasswordHasher {
    params: Params,
    permits: Arc<Semaphore>,
    wait: Duration,
    /// A hash at the current parameters that no password matches, verified against for unknown
    /// users so that they take as long as known ones (see [`PasswordHasher::dummy`]).
    dummy: OnceCell<String>,
}

impl PasswordHasher {
    pub fn new(params: Params, concurrency: usize, wait: Duration) -> PasswordHasher {
        PasswordHasher {
            params,
            permits: Arc::new(Semaphore::new(concurrency.max(1))),
            wait,
            dummy: OnceCell::new(),
        }
    }

    /// Hashes a new password with a fresh random salt.
    pub async fn hash(&self, password: &Password) -> Result<String, HashError> {
        let mut salt = [0u8; 16];
        getrandom::fill(&mut salt).map_err(|e| HashError::Failed(e.to_string()))?;
        let password = password.clone();
        let params = self.params;
        self.on_hash_thread(move || {
            let salt =
                SaltString::encode_b64(&salt).map_err(|e| HashError::Failed(e.to_string()))?;
            Scrypt
                .hash_password_customized(password.expose().as_bytes(), None, None, params, &salt)
                .map(|h| h.to_string())
                .map_err(|e| HashError::Failed(e.to_string()))
        })
        .await
    }

    /// Checks `password` against `stored`; with `None` (an unknown user) checks it against a dummy
    /// hash of the same cost and returns `false`, so both cases take the same time.
    pub async fn verify(
        &self,
        password: &Password,
        stored: Option<&str>,
    ) -> Result<bool, HashError> {
        let (phc, real) = match stored {
            Some(phc) => (phc.to_owned(), true),
            None => (self.dummy().await?.to_owned(), false),
        };
        let password = password.clone();
        let matched = self
            .on_hash_thread(move || {
                // A stored hash that does not parse can never match; that is not the caller's fault,
                // but it must not unlock the account either.
                let Ok(parsed) = PasswordHash::new(&phc) else {
                    return Ok(false);
                };
                Ok(Scrypt
                    .verify_password(password.expose().as_bytes(), &parsed)
                    .is_ok())
            })
            .await?;
        Ok(matched && real)
    }

    /// Whether `stored` was made with other parameters than the current ones (then it is re-hashed
    /// at the next successful login).
    pub fn needs_upgrade(&self, stored: &str) -> bool {
        let Ok(parsed) = PasswordHash::new(stored) else {
            return true;
        };
        match Params::try_from(&parsed) {
            Ok(p) => {
                (p.log_n(), p.r(), p.p()) != (self.params.log_n(), self.params.r(), self.params.p())
            }
            Err(_) => true,
        }
    }

    /// The dummy hash: a PHC string at the current parameters with a random salt and a random
    /// output. Nothing is hashed to make it: verifying against it costs one hash like any other
    /// (the cost is in deriving the key from the password and salt, whatever output it is compared
    /// with), and no password matches it (a 256-bit output chosen at random). So it is ready at
    /// once, and the start-up spends no hash on it (one hash takes about 45 ms of a core and 128
    /// MiB at the default cost, which the first requests after a start would otherwise share the
    /// machine with).
    async fn dummy(&self) -> Result<&str, HashError> {
        self.dummy
            .get_or_try_init(|| async { dummy_hash(self.params) })
            .await
            .map(String::as_str)
    }

    async fn on_hash_thread<T: Send + 'static>(
        &self,
        work: impl FnOnce() -> Result<T, HashError> + Send + 'static,
    ) -> Result<T, HashError> {
        let permit = tokio::time::timeout(self.wait, Arc::clone(&self.permits).acquire_owned())
            .await
            .map_err(|_| HashError::Busy(self.wait.max(Duration::from_secs(1))))?
            .map_err(|e| HashError::Failed(e.to_string()))?;
        let (tx, rx) = tokio::sync::oneshot::channel();
        // A thread of its own (not the blocking pool, whose threads serve database calls too and
        // could not get their priority back: raising it again needs `CAP_SYS_NICE`).
        std::thread::Builder::new()
            .name("password-hash".to_owned())
            .spawn(move || {
                lower_priority();
                let result = work();
                // The slot is free before the answer goes: a caller that has its answer finds
                // the slot free (this thread runs at a low priority, and could otherwise be
                // preempted between the two and hold the slot for a while).
                drop(permit);
                let _ = tx.send(result);
            })
            .map_err(|e| HashError::Failed(format!("no thread for hashing: {e}")))?;
        rx.await
            .map_err(|_| HashError::Failed("the hashing thread panicked".to_owned()))?
    }
}

/// A PHC string of scrypt at `params`, with a random salt and a random 32-byte output (the
/// length every hash here has).
fn dummy_hash(params: Params) -> Result<String, HashError> {
    let failed = |e: password_hash::Error| HashError::Failed(e.to_string());
    let mut random = [0u8; 48];
    getrandom::fill(&mut random).map_err(|e| HashError::Failed(e.to_string()))?;
    let (salt, output) = random.split_at(16);
    let salt = SaltString::encode_b64(salt).map_err(failed)?;
    let hash = PasswordHash {
        algorithm: scrypt::ALG_ID,
        version: None,
        params: params.try_into().map_err(failed)?,
        salt: Some(salt.as_salt()),
        hash: Some(Output::new(output).map_err(failed)?),
    };
    Ok(hash.to_string())
}

/// Lowers the calling thread's CPU priority to [`HASH_NICE`]. (On Linux a thread's nice value is
/// its own; failing to lower it only costs latency elsewhere, so it is logged, not fatal.)
fn lower_priority() {
    let tid = rustix::thread::gettid();
    if let Err(e) = rustix::process::setpriority_process(Some(tid), HASH_NICE) {
        tracing::debug!(error = %e, "could not lower the hashing thread's priority");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hasher(log_n: u8) -> PasswordHasher {
        PasswordHasher::new(
            Params::new(log_n, 8, 1, 32).unwrap(),
            2,
            Duration::from_secs(5),
        )
    }

    fn pw(s: &str) -> Password {
        Password::candidate(s.to_owned()).unwrap()
    }

    #[tokio::test]
    async fn hashing_runs_at_a_lower_priority_than_requests() {
        let h = hasher(4);
        let here = rustix::process::getpriority_process(Some(rustix::thread::gettid())).unwrap();
        let there = h
            .on_hash_thread(|| {
                Ok(rustix::process::getpriority_process(Some(rustix::thread::gettid())).unwrap())
            })
            .await
            .unwrap();
        assert!(there >= HASH_NICE, "hashing thread at nice {there}");
        assert!(there > here || here >= HASH_NICE, "{there} vs {here}");
    }

    #[tokio::test]
    async fn hashes_verify_and_carry_their_parameters() {
        let h = hasher(4);
        let phc = h.hash(&pw("correct horse")).await.unwrap();
        assert!(phc.starts_with("$scrypt$ln=4,r=8,p=1$"), "{phc}");
        assert!(!phc.contains("correct horse"));
        assert!(h.verify(&pw("correct horse"), Some(&phc)).await.unwrap());
        assert!(!h.verify(&pw("wrong horse"), Some(&phc)).await.unwrap());
        assert!(!h.verify(&pw("correct horse"), None).await.unwrap());
        assert!(!h.verify(&pw("x"), Some("not a phc string")).await.unwrap());
        assert!(!h.needs_upgrade(&phc));
        assert!(hasher(5).needs_upgrade(&phc));
        // An older hash still verifies under new settings.
        assert!(
            hasher(5)
                .verify(&pw("correct horse"), Some(&phc))
                .await
                .unwrap()
        );
    }

    /// Unknown users cost what known ones do only if the dummy is verified as fully as a real
    /// hash: it must parse, carry the same parameters, salt and output lengths, and be refused by
    /// scrypt itself as a wrong password (not cut short as malformed).
    #[tokio::test]
    async fn the_dummy_hash_is_verified_like_a_real_one_and_matches_nothing() {
        let h = hasher(4);
        let real = h.hash(&pw("correct horse")).await.unwrap();
        let dummy = h.dummy().await.unwrap().to_owned();
        assert_ne!(dummy, dummy_hash(h.params).unwrap(), "salted at random");
        let (real, dummy) = (
            PasswordHash::new(&real).unwrap(),
            PasswordHash::new(&dummy).unwrap(),
        );
        assert_eq!(dummy.algorithm, real.algorithm);
        assert_eq!(dummy.params, real.params);
        assert_eq!(
            dummy.salt.unwrap().as_str().len(),
            real.salt.unwrap().as_str().len()
        );
        assert_eq!(dummy.hash.unwrap().len(), real.hash.unwrap().len());
        assert!(matches!(
            Scrypt.verify_password(b"correct horse", &dummy),
            Err(password_hash::Error::Password)
        ));
        assert!(!h.needs_upgrade(&dummy.to_string()));
        assert!(!h.verify(&pw("correct horse"), None).await.unwrap());
    }

    #[tokio::test]
    async fn a_saturated_hasher_answers_busy() {
        let h = PasswordHasher::new(
            Params::new(4, 8, 1, 32).unwrap(),
            1,
            Duration::from_millis(50),
        );
        let held = Arc::clone(&h.permits).acquire_owned().await.unwrap();
        assert!(matches!(
            h.hash(&pw("whatever1")).await,
            Err(HashError::Busy(_))
        ));
        drop(held);
        assert!(h.hash(&pw("whatever1")).await.is_ok());
    }
}
