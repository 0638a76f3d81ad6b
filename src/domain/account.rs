//! Account fields: email, username and password.

use std::fmt;

/// An email address, lower-cased. Only the shape is checked (one `@`, a dotted domain, no spaces
/// or control characters, at most 254 bytes): whether it receives mail is not this service's concern.
#[derive(Clone, PartialEq, Eq)]
pub struct Email(String);

impl Email {
    pub const MAX_LEN: usize = 254;

    pub fn parse(raw: &str) -> Result<Email, &'static str> {
        let s = raw.trim();
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
        Ok(Email(s.to_lowercase()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Email {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("Email").field(&self.0).finish()
    }
}

/// A username: 3 to 100 of `A-Z a-z 0-9 _ . -`. Unique without regard to case.
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
