//! How each kind of configuration value is read from the file (a TOML
//! value) and from the environment (text), and shown again.

use std::path::PathBuf;

use serde_json::json;

/// A type a configuration key can hold.
pub trait ConfValue: Sized + Clone {
    /// From the TOML value of the key in the file.
    fn from_toml(v: &toml::Value) -> Result<Self, String>;
    /// From the text of an environment variable.
    fn from_env(s: &str) -> Result<Self, String>;
    /// The value in TOML syntax, as `config show` prints it; `None` when
    /// unset.
    fn to_toml(&self) -> Option<String>;
    fn to_json(&self) -> serde_json::Value;
}

fn kind(v: &toml::Value) -> &'static str {
    match v {
        toml::Value::String(_) => "a string",
        toml::Value::Integer(_) => "an integer",
        toml::Value::Float(_) => "a number",
        toml::Value::Boolean(_) => "true/false",
        toml::Value::Datetime(_) => "a date",
        toml::Value::Array(_) => "a list",
        toml::Value::Table(_) => "a table",
    }
}

fn quote(s: &str) -> String {
    toml::Value::String(s.to_string()).to_string()
}

impl ConfValue for String {
    fn from_toml(v: &toml::Value) -> Result<Self, String> {
        match v {
            toml::Value::String(s) => Ok(s.clone()),
            other => Err(format!("expected a string, found {}", kind(other))),
        }
    }
    fn from_env(s: &str) -> Result<Self, String> {
        Ok(s.to_string())
    }
    fn to_toml(&self) -> Option<String> {
        Some(quote(self))
    }
    fn to_json(&self) -> serde_json::Value {
        json!(self)
    }
}

impl ConfValue for PathBuf {
    fn from_toml(v: &toml::Value) -> Result<Self, String> {
        let s = String::from_toml(v)?;
        if s.is_empty() {
            return Err("expected a path, found an empty string".into());
        }
        Ok(PathBuf::from(s))
    }
    fn from_env(s: &str) -> Result<Self, String> {
        if s.is_empty() {
            return Err("expected a path, found nothing".into());
        }
        Ok(PathBuf::from(s))
    }
    fn to_toml(&self) -> Option<String> {
        Some(quote(&self.display().to_string()))
    }
    fn to_json(&self) -> serde_json::Value {
        json!(self.display().to_string())
    }
}

impl ConfValue for bool {
    fn from_toml(v: &toml::Value) -> Result<Self, String> {
        match v {
            toml::Value::Boolean(b) => Ok(*b),
            other => Err(format!("expected true or false, found {}", kind(other))),
        }
    }
    fn from_env(s: &str) -> Result<Self, String> {
        match s.trim().to_ascii_lowercase().as_str() {
            "true" | "yes" | "1" | "on" => Ok(true),
            "false" | "no" | "0" | "off" => Ok(false),
            _ => Err(format!("expected true or false, found {s:?}")),
        }
    }
    fn to_toml(&self) -> Option<String> {
        Some(self.to_string())
    }
    fn to_json(&self) -> serde_json::Value {
        json!(self)
    }
}

/// A whole number of at least `MIN`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Count<const MIN: u64>(pub u64);

impl<const MIN: u64> ConfValue for Count<MIN> {
    fn from_toml(v: &toml::Value) -> Result<Self, String> {
        match v {
            toml::Value::Integer(n) if *n >= MIN as i64 => Ok(Count(*n as u64)),
            toml::Value::Integer(n) => {
                Err(format!("expected a number of at least {MIN}, found {n}"))
            }
            other => Err(format!("expected a number, found {}", kind(other))),
        }
    }
    fn from_env(s: &str) -> Result<Self, String> {
        match s.trim().parse::<u64>() {
            Ok(n) if n >= MIN => Ok(Count(n)),
            _ => Err(format!("expected a number of at least {MIN}, found {s:?}")),
        }
    }
    fn to_toml(&self) -> Option<String> {
        Some(self.0.to_string())
    }
    fn to_json(&self) -> serde_json::Value {
        json!(self.0)
    }
}

/// A compression level: any integer (zstd allows negative levels).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Level(pub i32);

impl ConfValue for Level {
    fn from_toml(v: &toml::Value) -> Result<Self, String> {
        match v {
            toml::Value::Integer(n) => i32::try_from(*n)
                .map(Level)
                .map_err(|_| format!("level {n} is out of range")),
            other => Err(format!("expected a number, found {}", kind(other))),
        }
    }
    fn from_env(s: &str) -> Result<Self, String> {
        s.trim()
            .parse()
            .map(Level)
            .map_err(|_| format!("expected a number, found {s:?}"))
    }
    fn to_toml(&self) -> Option<String> {
        Some(self.0.to_string())
    }
    fn to_json(&self) -> serde_json::Value {
        json!(self.0)
    }
}

/// A duration in seconds, written `90s`, `30m`, `12h`, `7d`, `2w`, `1d12h` (or a
/// bare number of seconds).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Duration(pub i64);

/// Seconds in the largest unit that divides them: `8d`, `90m`, `45s`.
pub fn fmt_duration(secs: i64) -> String {
    for (unit, n) in [("d", 86400), ("h", 3600), ("m", 60)] {
        if secs != 0 && secs % n == 0 {
            return format!("{}{unit}", secs / n);
        }
    }
    format!("{secs}s")
}

impl ConfValue for Duration {
    fn from_toml(v: &toml::Value) -> Result<Self, String> {
        match v {
            toml::Value::String(s) => Self::from_env(s),
            toml::Value::Integer(n) if (0..=crate::util::MAX_DURATION).contains(n) => {
                Ok(Duration(*n))
            }
            toml::Value::Integer(n) if *n > 0 => {
                Err(format!("duration {n} seconds is too long (at most 36500d)"))
            }
            other => Err(format!(
                "expected a duration like \"8d\", found {}",
                kind(other)
            )),
        }
    }
    fn from_env(s: &str) -> Result<Self, String> {
        crate::util::parse_duration(s)
            .map(Duration)
            .map_err(|e| e.to_string())
    }
    fn to_toml(&self) -> Option<String> {
        Some(quote(&fmt_duration(self.0)))
    }
    fn to_json(&self) -> serde_json::Value {
        json!(fmt_duration(self.0))
    }
}

impl ConfValue for Vec<String> {
    fn from_toml(v: &toml::Value) -> Result<Self, String> {
        match v {
            toml::Value::Array(items) => items.iter().map(String::from_toml).collect(),
            other => Err(format!(
                "expected a list of strings like [\"a\", \"b\"], found {}",
                kind(other)
            )),
        }
    }
    /// `["a", "b"]` (TOML) for several items, else the text is one item.
    fn from_env(s: &str) -> Result<Self, String> {
        let t = s.trim();
        if t.is_empty() {
            return Ok(Vec::new());
        }
        if t.starts_with('[') {
            let doc: toml::Table = format!("v = {t}")
                .parse()
                .map_err(|e: toml::de::Error| format!("bad list {t:?}: {}", e.message()))?;
            return Self::from_toml(&doc["v"]);
        }
        Ok(vec![s.to_string()])
    }
    fn to_toml(&self) -> Option<String> {
        Some(format!(
            "[{}]",
            self.iter().map(|s| quote(s)).collect::<Vec<_>>().join(", ")
        ))
    }
    fn to_json(&self) -> serde_json::Value {
        json!(self)
    }
}

impl<T: ConfValue> ConfValue for Option<T> {
    fn from_toml(v: &toml::Value) -> Result<Self, String> {
        T::from_toml(v).map(Some)
    }
    /// An empty variable unsets the value.
    fn from_env(s: &str) -> Result<Self, String> {
        if s.is_empty() {
            Ok(None)
        } else {
            T::from_env(s).map(Some)
        }
    }
    fn to_toml(&self) -> Option<String> {
        self.as_ref().and_then(T::to_toml)
    }
    fn to_json(&self) -> serde_json::Value {
        self.as_ref()
            .map(T::to_json)
            .unwrap_or(serde_json::Value::Null)
    }
}

/// A value chosen by name from a clap `ValueEnum` (compression, severity).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Choice<T>(pub T);

impl<T: clap::ValueEnum + Clone> ConfValue for Choice<T> {
    fn from_toml(v: &toml::Value) -> Result<Self, String> {
        Self::from_env(&String::from_toml(v)?)
    }
    fn from_env(s: &str) -> Result<Self, String> {
        T::from_str(s.trim(), true).map(Choice).map_err(|_| {
            let names: Vec<String> = T::value_variants()
                .iter()
                .filter_map(|v| v.to_possible_value())
                .map(|p| format!("\"{}\"", p.get_name()))
                .collect();
            format!("{s:?} is not one of {}", names.join(", "))
        })
    }
    fn to_toml(&self) -> Option<String> {
        Some(quote(&self.name()))
    }
    fn to_json(&self) -> serde_json::Value {
        json!(self.name())
    }
}

impl<T: clap::ValueEnum> Choice<T> {
    pub fn name(&self) -> String {
        self.0
            .to_possible_value()
            .map(|p| p.get_name().to_string())
            .unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(text: &str) -> toml::Value {
        let doc: toml::Table = format!("v = {text}").parse().unwrap();
        doc["v"].clone()
    }

    #[test]
    fn values_from_toml_and_environment() {
        assert_eq!(
            Duration::from_toml(&t("\"8d\"")).unwrap(),
            Duration(8 * 86400)
        );
        assert_eq!(Duration::from_toml(&t("90")).unwrap(), Duration(90));
        // Compound forms, in the file and from the environment.
        assert_eq!(
            Duration::from_toml(&t("\"1d12h\"")).unwrap(),
            Duration(36 * 3600)
        );
        assert_eq!(Duration::from_env("2w1d").unwrap(), Duration(15 * 86400));
        // Shown back in a form that parses to the same value.
        let shown = fmt_duration(36 * 3600);
        assert_eq!(crate::util::parse_duration(&shown).unwrap(), 36 * 3600);
        assert!(Duration::from_toml(&t("\"8 days\""))
            .unwrap_err()
            .contains("bad duration"));
        assert_eq!(fmt_duration(8 * 86400), "8d");
        assert_eq!(fmt_duration(14 * 86400), "14d");
        assert_eq!(fmt_duration(5400), "90m");
        assert_eq!(fmt_duration(0), "0s");
        assert_eq!(Count::<1>::from_toml(&t("3")).unwrap(), Count(3));
        assert!(Count::<1>::from_toml(&t("0"))
            .unwrap_err()
            .contains("at least 1"));
        assert!(Count::<1>::from_toml(&t("\"3\""))
            .unwrap_err()
            .contains("found a string"));
        assert!(bool::from_toml(&t("\"yes\"")).is_err());
        assert!(bool::from_env("yes").unwrap());
        assert_eq!(
            Vec::<String>::from_env("[\"a,b\", \"c\"]").unwrap(),
            vec!["a,b".to_string(), "c".to_string()]
        );
        assert_eq!(
            Vec::<String>::from_env("console=ttyS0,115200").unwrap(),
            vec!["console=ttyS0,115200".to_string()]
        );
        assert_eq!(Option::<PathBuf>::from_env("").unwrap(), None);
        let c = Choice::<crate::backup::Compression>::from_toml(&t("\"gzip\"")).unwrap();
        assert_eq!(c.0, crate::backup::Compression::Gzip);
        let e = Choice::<crate::backup::Compression>::from_env("lz4").unwrap_err();
        assert!(e.contains("\"zstd\", \"gzip\", \"none\""), "{e}");
        let odd = vec!["a\"b'c".to_string(), "d\\e".to_string()];
        assert_eq!(
            Vec::<String>::from_toml(&t(&odd.to_toml().unwrap())).unwrap(),
            odd
        );
    }
}
