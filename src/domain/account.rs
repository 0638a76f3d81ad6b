//! Account fields: email, username and password.

use std::fmt;

use unicode_normalization::UnicodeNormalization as _;
use unicode_security::skeleton;

/// An email address in its normal form: surrounding whitespace trimmed, then NFKC, lower case and
/// NFKC again (lower-casing can undo NFKC), so that every way of typing one address (NFC or NFD,
/// full-width letters, any case) is one string. Only the shape is checked, on the normal form (one
/// `@`, a dotted domain, no spaces or control characters, at most 254 bytes): whether it receives
/// mail is not this service's concern.
///
/// Case is folded with Unicode's lower-case mapping rather than full case folding, which would
/// also make `ß` and `ss` one letter: they name different domains under IDNA 2008.
///
/// Two different addresses can still look the same (`аnn@example.com` with a Cyrillic `а` and
/// `ann@example.com`); [`Email::skeleton`] is what the store compares to refuse such look-alikes.
#[derive(Clone, PartialEq, Eq)]
pub struct Email(String);

impl Email {
    pub const MAX_LEN: usize = 254;

    pub fn parse(raw: &str) -> Result<Email, &'static str> {
        let s = Self::normalize(raw);
        if s.is_empty() {
            return Err("must not be empty");
        }
        if s.len() > Self::MAX_LEN {
            return Err("must be at most 254 characters");
        }
        if s.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err("must not contain spaces or control characters");
        }
        let Some((local, domain)) = s.rsplit_once('@') else {
            return Err("must be an email address (name@example.com)");
        };
        let domain_ok = !domain.starts_with('.')
            && !domain.ends_with('.')
            && domain.contains('.')
            && !domain.contains("..")
            && !domain.contains('@');
        if local.is_empty() || local.len() > 64 || !domain_ok {
            return Err("must be an email address (name@example.com)");
        }
        Ok(Email(s))
    }

    /// The normal form of `raw` without any check: what a login by email, an operator's lookup and
    /// the back-fill of rows written by older releases compare with the stored addresses.
    pub fn normalize(raw: &str) -> String {
        let folded = raw.trim().nfkc().collect::<String>().to_lowercase();
        if folded.is_ascii() {
            folded
        } else {
            folded.nfkc().collect()
        }
    }

    /// The address's confusable skeleton (Unicode TS #39): two addresses with the same skeleton
    /// look alike. See [`email_skeleton`].
    pub fn skeleton(&self) -> String {
        email_skeleton(&self.0)
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// The confusable skeleton (Unicode TS #39) of an address already in [`Email::normalize`]'s form:
/// every character replaced by the prototype it is confusable with (Cyrillic `а` by Latin `a`,
/// `1` by `l`), invisible characters dropped.
///
/// The store refuses a new or changed address whose skeleton equals another account's, unless
/// both addresses are plain ASCII: TS #39 also counts ASCII pairs such as `l` and `1` or `rn` and
/// `m` as confusable, but two ASCII addresses that differ are two real mailboxes that may well
/// belong to two people, and tell apart in the fixed-width fonts an operator reads them in; a
/// letter from another script looks the same in every font.
pub fn email_skeleton(normalized: &str) -> String {
    skeleton(normalized).collect()
}

impl fmt::Debug for Email {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("Email").field(&self.0).finish()
    }
}

/// A username: 3 to 100 of `A-Z a-z 0-9 _ . -`. Unique without regard to case.
///
/// Being ASCII, a username has no look-alike in another script. ASCII look-alikes (`l`, `I` and
/// `1`; `O` and `0`; `rn` and `m`) are allowed on purpose: a username is never shown to another
/// user (every user's skills are private), so a look-alike deceives no one, and refusing `bi1l`
/// because `bill` exists would fail a registration for a reason its user cannot see. Should the
/// alphabet ever grow beyond ASCII, usernames need the skeleton rule that emails have.
#[derive(Clone, PartialEq, Eq)]
pub struct Username(String);

impl Username {
    pub fn parse(raw: &str) -> Result<Username, &'static str> {
        if raw.len() < 3 || raw.len() > 100 {
            return Err("must be 3 to 100 characters long");
        }
        if !raw
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'))
        {
            return Err("may contain only letters, digits, '_', '.' and '-'");
        }
        Ok(Username(raw.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Username {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("Username").field(&self.0).finish()
    }
}

/// A new password: 8 to 1024 bytes, no composition rules. Its `Debug` never shows it.
#[derive(Clone)]
pub struct Password(String);

impl Password {
    pub const MIN_LEN: usize = 8;
    pub const MAX_LEN: usize = 1024;

    /// Checks the rules for a password being set (registration, password change).
    pub fn parse(raw: String) -> Result<Password, &'static str> {
        if raw.len() < Self::MIN_LEN {
            return Err("must be at least 8 bytes long");
        }
        if raw.len() > Self::MAX_LEN {
            return Err("must be at most 1024 bytes long");
        }
        Ok(Password(raw))
    }

    /// A password being checked (login, account deletion): only the length cap applies, so that a
    /// password set under older rules still works, and hashing cost stays bounded.
    pub fn candidate(raw: String) -> Result<Password, &'static str> {
        if raw.is_empty() {
            return Err("must not be empty");
        }
        if raw.len() > Self::MAX_LEN {
            return Err("must be at most 1024 bytes long");
        }
        Ok(Password(raw))
    }

    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Password {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Password(<redacted>)")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn emails_are_lower_cased_and_checked() {
        assert_eq!(
            Email::parse(" Ann@Example.COM ").unwrap().as_str(),
            "ann@example.com"
        );
        for bad in [
            "",
            "ann",
            "ann@",
            "@example.com",
            "ann@example",
            "a b@example.com",
            "ann@example..com",
            "ann@.example.com",
            "ann@example.com.",
            "a\u{0}@example.com",
        ] {
            assert!(Email::parse(bad).is_err(), "{bad:?} accepted");
        }
        let long = format!("{}@example.com", "a".repeat(250));
        assert!(Email::parse(&long).is_err());
    }

    #[test]
    fn every_spelling_of_an_address_normalizes_to_one_form() {
        let nfc = "ren\u{e9}e@example.com";
        for spelling in [
            "Ren\u{e9}e@Example.com",
            "RENE\u{301}E@EXAMPLE.COM",
            " rene\u{301}e@example.com\t",
            "\u{ff32}\u{ff25}\u{ff2e}\u{c9}\u{ff25}\u{ff20}example.com",
        ] {
            assert_eq!(
                Email::parse(spelling).unwrap().as_str(),
                nfc,
                "{spelling:?}"
            );
            assert_eq!(Email::normalize(spelling), nfc, "{spelling:?}");
        }
        // Not full case folding: ß stays itself.
        assert_eq!(
            Email::parse("STRA\u{df}E@example.de").unwrap().as_str(),
            "stra\u{df}e@example.de"
        );
        // The shape is checked on the normal form: a full-width `@` is an `@`, and a compatibility
        // character that decomposes to a space is a space.
        assert!(Email::parse("ann\u{ff20}example.com").is_ok());
        assert!(Email::parse("ann\u{a8}@example.com").is_err());
    }

    #[test]
    fn look_alike_addresses_share_a_skeleton_and_others_do_not() {
        let skeleton = |raw: &str| Email::parse(raw).unwrap().skeleton();
        let ann = skeleton("ann@example.com");
        // Cyrillic а, Latin alpha (a single script, but not ASCII), an invisible character.
        for look_alike in [
            "\u{430}nn@example.com",
            "\u{251}nn@example.com",
            "a\u{200b}nn@example.com",
            "ANN@example.com",
        ] {
            assert_eq!(skeleton(look_alike), ann, "{look_alike:?}");
        }
        assert_ne!(
            skeleton(
                "\u{438}\u{432}\u{430}\u{43d}@\u{43f}\u{440}\u{438}\u{43c}\u{435}\u{440}.\u{440}\u{444}"
            ),
            ann
        );
        assert_ne!(skeleton("anne@example.com"), ann);
        // TS #39 counts these ASCII pairs as confusable; the store lets ASCII pairs be.
        assert_eq!(skeleton("bill@example.com"), skeleton("bi1l@example.com"));
    }

    #[test]
    fn usernames_follow_the_rules() {
        assert!(Username::parse("ann.b-c_d9").is_ok());
        assert!(Username::parse(&"a".repeat(100)).is_ok());
        for bad in ["ab", "ann b", "ann/b", "änn", &"a".repeat(101)] {
            assert!(Username::parse(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn passwords_have_length_rules_only_and_never_print() {
        assert!(Password::parse("12345678".into()).is_ok());
        assert!(Password::parse("1234567".into()).is_err());
        assert!(Password::parse("x".repeat(1025)).is_err());
        assert!(Password::candidate("short".into()).is_ok());
        let p = Password::parse("hunter2hunter2".into()).unwrap();
        assert!(!format!("{p:?}").contains("hunter2"));
    }
}
