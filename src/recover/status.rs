//! What became of one step of a recovery, as the report records it.

use serde::{Deserialize, Serialize};

/// A step's outcome; the report's JSON holds the words `done`,
/// `skipped (already done)` and `dry run`, as it always has.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum StepStatus {
    /// The step ran.
    #[serde(rename = "done")]
    Done,
    /// The journal records the step as done by an earlier run.
    #[serde(rename = "skipped (already done)")]
    AlreadyDone,
    /// `--dry-run`: the step's commands were shown, not run.
    #[serde(rename = "dry run")]
    DryRun,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_is_the_words_of_old_reports() {
        for (s, text) in [
            (StepStatus::Done, "\"done\""),
            (StepStatus::AlreadyDone, "\"skipped (already done)\""),
            (StepStatus::DryRun, "\"dry run\""),
        ] {
            assert_eq!(serde_json::to_string(&s).unwrap(), text);
            assert_eq!(serde_json::from_str::<StepStatus>(text).unwrap(), s);
        }
    }
}
