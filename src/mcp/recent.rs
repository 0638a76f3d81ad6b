//! Which skills each user used last, for the budgeted listing (`mcp.metadata_max_skills`).
//!
//! A use is a `load_skill`, `read_reference_file`, `run_shell_command` or `skills/get` of an
//! active skill. It is remembered in memory only, per process: a restart forgets it (the listing
//! then falls back to the most recently updated skills), and each replica knows its own clients'
//! uses. Nothing is recorded when the listing is unlimited, so that mode costs nothing here.
//!
//! Each user's uses carry a logical clock rather than times: the order is all that matters, and
//! two uses in the same instant keep theirs.

use std::collections::HashMap;
use std::sync::{Mutex, PoisonError};

use uuid::Uuid;

/// Skills remembered per user: the oldest uses are forgotten past it, so a user who touches
/// many skills (or many that are then deleted) holds bounded memory.
const REMEMBERED_PER_USER: usize = 4096;

/// Each user's skill uses, in order.
#[derive(Debug, Default)]
pub struct RecentUse {
    users: Mutex<HashMap<Uuid, UserUses>>,
}

#[derive(Debug, Default)]
struct UserUses {
    clock: u64,
    /// Skill id → the clock at its last use.
    skills: HashMap<Uuid, u64>,
}

impl RecentUse {
    /// `user` used `skill` now.
    pub fn record(&self, user: Uuid, skill: Uuid) {
        let mut users = self.users.lock().unwrap_or_else(PoisonError::into_inner);
        let uses = users.entry(user).or_default();
        uses.clock += 1;
        uses.skills.insert(skill, uses.clock);
        if uses.skills.len() > REMEMBERED_PER_USER
            && let Some(oldest) = uses
                .skills
                .iter()
                .min_by_key(|(_, at)| **at)
                .map(|(id, _)| *id)
        {
            uses.skills.remove(&oldest);
        }
    }

    /// The user's uses: skill id → a number larger for later uses.
    pub fn of(&self, user: Uuid) -> HashMap<Uuid, u64> {
        self.users
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(&user)
            .map(|uses| uses.skills.clone())
            .unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn later_uses_count_higher_and_users_are_apart() {
        let recent = RecentUse::default();
        let (alice, bob) = (Uuid::from_u128(1), Uuid::from_u128(2));
        let (a, b) = (Uuid::from_u128(10), Uuid::from_u128(11));
        recent.record(alice, a);
        recent.record(alice, b);
        recent.record(alice, a);
        let uses = recent.of(alice);
        assert!(uses[&a] > uses[&b]);
        assert!(recent.of(bob).is_empty());
    }

    #[test]
    fn the_oldest_uses_are_forgotten_past_the_cap() {
        let recent = RecentUse::default();
        let user = Uuid::from_u128(1);
        for n in 0..=REMEMBERED_PER_USER as u128 {
            recent.record(user, Uuid::from_u128(100 + n));
        }
        let uses = recent.of(user);
        assert_eq!(uses.len(), REMEMBERED_PER_USER);
        assert!(!uses.contains_key(&Uuid::from_u128(100)));
    }
}
