//! The aspect set: the yes/no questions a teacher answers about every image (`aspects.json`).

use serde::{Deserialize, Serialize};

/// One yes/no question about an aspect of the object.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Question {
    /// Stable short id (`q01`, …); column name in tables and reports.
    pub id: String,
    /// The question as asked, ending in `?`.
    pub text: String,
    /// visual, shape, part, material, environment, function, abstract, …
    #[serde(default)]
    pub kind: String,
}
