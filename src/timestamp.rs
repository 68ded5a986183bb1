//! A moment as lifeboat's records hold it: RFC 3339 UTC to the second
//! (`2026-11-26T05:57:26Z`, [`crate::util::rfc3339`]).
//!
//! Text in another form (a hand-edited or foreign file) is kept as read,
//! as bootc keeps an unknown partition type: every old file loads and is
//! written back byte for byte; only a moment in lifeboat's own form has an
//! epoch.

use std::fmt;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::util::{now_epoch, parse_rfc3339, rfc3339};

#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Timestamp {
    /// Seconds since the epoch, UTC.
    Utc(i64),
    /// Text not in the form lifeboat writes, kept as read.
    Other(String),
}

impl Timestamp {
    pub fn now() -> Timestamp {
        Timestamp::Utc(now_epoch())
    }

    /// Seconds since the epoch, when the text is a moment lifeboat writes.
    pub fn epoch(&self) -> Option<i64> {
        match self {
            Timestamp::Utc(e) => Some(*e),
            Timestamp::Other(_) => None,
        }
    }
}

impl From<&str> for Timestamp {
    fn from(text: &str) -> Timestamp {
        match parse_rfc3339(text) {
            // Only text that formats back to itself (no 25:61 hours).
            Ok(e) if rfc3339(e) == text => Timestamp::Utc(e),
            _ => Timestamp::Other(text.to_string()),
        }
    }
}

impl fmt::Display for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Timestamp::Utc(e) => f.write_str(&rfc3339(*e)),
            Timestamp::Other(s) => f.write_str(s),
        }
    }
}

impl Serialize for Timestamp {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Timestamp {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Timestamp, D::Error> {
        Ok(Timestamp::from(String::deserialize(d)?.as_str()))
    }
}

crate::layout::kinds::string_schema!(Timestamp);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lifeboat_moments_have_an_epoch_and_write_back_the_same() {
        let t: Timestamp = serde_json::from_str("\"2026-11-26T05:57:26Z\"").unwrap();
        assert_eq!(
            t.epoch(),
            Some(parse_rfc3339("2026-11-26T05:57:26Z").unwrap())
        );
        assert_eq!(
            serde_json::to_string(&t).unwrap(),
            "\"2026-11-26T05:57:26Z\""
        );
        assert!(Timestamp::Utc(0) < Timestamp::Utc(1));
    }

    #[test]
    fn other_text_is_kept_as_read() {
        for text in ["x", "", "2026-11-26 05:57:26", "2026-11-26T25:61:00Z"] {
            let t = Timestamp::from(text);
            assert_eq!(t, Timestamp::Other(text.into()), "{text}");
            assert_eq!(t.epoch(), None);
            assert_eq!(t.to_string(), text);
        }
    }
}
