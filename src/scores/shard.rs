//! `--shard i/n`: one machine's share of a labeling run.

use crate::error::{input, Error, Result};
use serde::{Deserialize, Serialize};

/// The images with `index % count == index()` (0-based). Valid by construction: every way in
/// (the flag, a manifest, code) goes through [`Shard::new`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "[usize; 2]", into = "[usize; 2]")]
pub struct Shard {
    index: usize,
    count: usize,
}

impl Shard {
    pub fn new(index: usize, count: usize) -> Result<Shard> {
        if count == 0 || index >= count {
            return Err(input(
                format!("invalid shard {index}/{count}"),
                "--shard",
                "a shard is i/n with 0 <= i < n (i is 0-based), e.g. --shard 0/4",
            ));
        }
        Ok(Shard { index, count })
    }

    pub fn index(&self) -> usize {
        self.index
    }

    pub fn count(&self) -> usize {
        self.count
    }

    /// Whether image `image` belongs to this shard.
    pub fn owns(&self, image: usize) -> bool {
        image % self.count == self.index
    }
}

impl std::fmt::Display for Shard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.index, self.count)
    }
}

impl std::str::FromStr for Shard {
    type Err = Error;
    fn from_str(s: &str) -> Result<Shard> {
        let bad = |what: String| {
            input(
                what,
                "--shard",
                "write i/n, e.g. --shard 0/4 (i is 0-based)",
            )
        };
        let (i, n) = s
            .split_once('/')
            .ok_or_else(|| bad(format!("{s:?} is not i/n")))?;
        let i = i
            .trim()
            .parse()
            .map_err(|_| bad(format!("{i:?} is not a shard index")))?;
        let n = n
            .trim()
            .parse()
            .map_err(|_| bad(format!("{n:?} is not a shard count")))?;
        Shard::new(i, n)
    }
}

impl TryFrom<[usize; 2]> for Shard {
    type Error = String;
    fn try_from([i, n]: [usize; 2]) -> std::result::Result<Shard, String> {
        Shard::new(i, n).map_err(|e| e.to_string())
    }
}

impl From<Shard> for [usize; 2] {
    fn from(s: Shard) -> [usize; 2] {
        [s.index, s.count]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_validates_and_round_trips() {
        let s: Shard = "2/4".parse().unwrap();
        assert_eq!(
            (s.index(), s.count(), s.to_string()),
            (2, 4, "2/4".to_string())
        );
        assert!(s.owns(6) && !s.owns(5));
        for bad in ["4/4", "1", "a/2", "0/0", "-1/2"] {
            assert!(bad.parse::<Shard>().is_err(), "{bad}");
        }
        assert_eq!(serde_json::to_string(&s).unwrap(), "[2,4]");
        assert_eq!(serde_json::from_str::<Shard>("[2,4]").unwrap(), s);
        // A manifest holding an impossible shard does not load.
        assert!(serde_json::from_str::<Shard>("[3,3]").is_err());
    }
}
